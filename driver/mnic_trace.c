// SPDX-License-Identifier: GPL-2.0
/*
 * Instantiates the mnic trace events of mnic_trace.h in mnic.ko.
 *
 * CREATE_RUST_TRACE_POINTS also defines rust_do_trace_<event>(), one function per event that
 * fires it unconditionally; driver/trace.rs tests the event's static key itself and calls the
 * function only when the event is enabled, as a C caller of trace_<event>() would.
 */
#define CREATE_TRACE_POINTS
#define CREATE_RUST_TRACE_POINTS
#include "mnic_trace.h"
