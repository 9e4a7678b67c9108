/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The trace events of mnic.ko, system "mnic" (docs/spec.md §13, docs/observability.md).
 *
 * TRACE_EVENT is a C macro, so the events are defined here and instantiated in mnic_trace.c;
 * the Rust driver calls them through driver/trace.rs. Every argument is a plain integer so
 * that the Rust declarations there mirror these prototypes exactly.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM mnic
/* define_trace.h includes this file again by path: from the module's own directory. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE mnic_trace

#if !defined(_MNIC_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _MNIC_TRACE_H

#include <linux/mmu_notifier.h>
#include <linux/tracepoint.h>

/* The values go into the format file as numbers, so trace-cmd and perf can print the names. */
TRACE_DEFINE_ENUM(MMU_NOTIFY_UNMAP);
TRACE_DEFINE_ENUM(MMU_NOTIFY_CLEAR);
TRACE_DEFINE_ENUM(MMU_NOTIFY_PROTECTION_VMA);
TRACE_DEFINE_ENUM(MMU_NOTIFY_PROTECTION_PAGE);
TRACE_DEFINE_ENUM(MMU_NOTIFY_SOFT_DIRTY);
TRACE_DEFINE_ENUM(MMU_NOTIFY_RELEASE);
TRACE_DEFINE_ENUM(MMU_NOTIFY_MIGRATE);
TRACE_DEFINE_ENUM(MMU_NOTIFY_EXCLUSIVE);

#define mnic_show_mmu_event(event)					\
	__print_symbolic(event,						\
			 { MMU_NOTIFY_UNMAP, "UNMAP" },			\
			 { MMU_NOTIFY_CLEAR, "CLEAR" },			\
			 { MMU_NOTIFY_PROTECTION_VMA, "PROTECTION_VMA" },	\
			 { MMU_NOTIFY_PROTECTION_PAGE, "PROTECTION_PAGE" },	\
			 { MMU_NOTIFY_SOFT_DIRTY, "SOFT_DIRTY" },		\
			 { MMU_NOTIFY_RELEASE, "RELEASE" },		\
			 { MMU_NOTIFY_MIGRATE, "MIGRATE" },		\
			 { MMU_NOTIFY_EXCLUSIVE, "EXCLUSIVE" })

/* First pass of an invalidation callback: the range's leaves are cleared. */
TRACE_EVENT(inval_start,
	TP_PROTO(u32 dev, u16 ctx, u32 handle, u64 start, u64 end, u32 event,
		 u64 pages, u64 huge, bool blockable),
	TP_ARGS(dev, ctx, handle, start, end, event, pages, huge, blockable),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(u16, ctx)
		__field(bool, blockable)
		__field(u32, handle)
		__field(u32, event)
		__field(u64, start)
		__field(u64, end)
		__field(u64, pages)
		__field(u64, huge)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->ctx = ctx;
		__entry->blockable = blockable;
		__entry->handle = handle;
		__entry->event = event;
		__entry->start = start;
		__entry->end = end;
		__entry->pages = pages;
		__entry->huge = huge;
	),
	TP_printk("dev=%u ctx=%u handle=%u start=0x%llx end=0x%llx event=%s pages=%llu huge=%llu blockable=%d",
		  __entry->dev, __entry->ctx, __entry->handle, __entry->start,
		  __entry->end, mnic_show_mmu_event(__entry->event),
		  __entry->pages, __entry->huge, __entry->blockable)
);

/* The same invalidation is complete for the device (its SYNC seen, or none needed). */
TRACE_EVENT(inval_end,
	TP_PROTO(u32 dev, u16 ctx, u32 handle, u64 start, u64 end, u32 event,
		 u64 seq, u64 us),
	TP_ARGS(dev, ctx, handle, start, end, event, seq, us),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(u16, ctx)
		__field(u32, handle)
		__field(u32, event)
		__field(u64, start)
		__field(u64, end)
		__field(u64, seq)
		__field(u64, us)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->ctx = ctx;
		__entry->handle = handle;
		__entry->event = event;
		__entry->start = start;
		__entry->end = end;
		__entry->seq = seq;
		__entry->us = us;
	),
	TP_printk("dev=%u ctx=%u handle=%u start=0x%llx end=0x%llx event=%s seq=%llu us=%llu",
		  __entry->dev, __entry->ctx, __entry->handle, __entry->start,
		  __entry->end, mnic_show_mmu_event(__entry->event),
		  __entry->seq, __entry->us)
);

/* A SYNC is on the command queue (ctx -1: a bare SYNC, no command before it). */
TRACE_EVENT(sync_post,
	TP_PROTO(u32 dev, s32 ctx, u64 seq, u32 cmds, bool rang),
	TP_ARGS(dev, ctx, seq, cmds, rang),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(s32, ctx)
		__field(u64, seq)
		__field(u32, cmds)
		__field(bool, rang)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->ctx = ctx;
		__entry->seq = seq;
		__entry->cmds = cmds;
		__entry->rang = rang;
	),
	TP_printk("dev=%u ctx=%d seq=%llu cmds=%u rang=%d",
		  __entry->dev, __entry->ctx, __entry->seq, __entry->cmds,
		  __entry->rang)
);

/* A SYNC wait saw its ticket. */
TRACE_EVENT(sync_done,
	TP_PROTO(u32 dev, u64 seq, u64 us, bool polled),
	TP_ARGS(dev, seq, us, polled),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(bool, polled)
		__field(u64, seq)
		__field(u64, us)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->polled = polled;
		__entry->seq = seq;
		__entry->us = us;
	),
	TP_printk("dev=%u seq=%llu us=%llu polled=%d",
		  __entry->dev, __entry->seq, __entry->us, __entry->polled)
);

/* The event thread took a FAULT event off the ring (remote: a network fault, raised by a packet). */
TRACE_EVENT(fault_recv,
	TP_PROTO(u32 dev, u16 ctx, u64 va, bool write, u64 id, bool remote),
	TP_ARGS(dev, ctx, va, write, id, remote),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(u16, ctx)
		__field(bool, write)
		__field(bool, remote)
		__field(u64, va)
		__field(u64, id)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->ctx = ctx;
		__entry->write = write;
		__entry->remote = remote;
		__entry->va = va;
		__entry->id = id;
	),
	TP_printk("dev=%u ctx=%u va=0x%llx write=%d id=%llu remote=%d",
		  __entry->dev, __entry->ctx, __entry->va, __entry->write,
		  __entry->id, __entry->remote)
);

/* The fault's fill finished (result 0, or the errno it is aborted with). */
TRACE_EVENT(fault_resolved,
	TP_PROTO(u32 dev, u16 ctx, u64 va, bool write, u64 id, u64 us,
		 u32 window, s32 result),
	TP_ARGS(dev, ctx, va, write, id, us, window, result),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(u16, ctx)
		__field(bool, write)
		__field(u64, va)
		__field(u64, id)
		__field(u64, us)
		__field(u32, window)
		__field(s32, result)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->ctx = ctx;
		__entry->write = write;
		__entry->va = va;
		__entry->id = id;
		__entry->us = us;
		__entry->window = window;
		__entry->result = result;
	),
	TP_printk("dev=%u ctx=%u va=0x%llx write=%d id=%llu us=%llu window=%u result=%d",
		  __entry->dev, __entry->ctx, __entry->va, __entry->write,
		  __entry->id, __entry->us, __entry->window, __entry->result)
);

/* The fault's RESUME (result 0) or ABORT (result = errno) is on the command queue. */
TRACE_EVENT(fault_resumed,
	TP_PROTO(u32 dev, u16 ctx, u64 id, u64 us, s32 result),
	TP_ARGS(dev, ctx, id, us, result),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(u16, ctx)
		__field(s32, result)
		__field(u64, id)
		__field(u64, us)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->ctx = ctx;
		__entry->result = result;
		__entry->id = id;
		__entry->us = us;
	),
	TP_printk("dev=%u ctx=%u id=%llu us=%llu result=%d",
		  __entry->dev, __entry->ctx, __entry->id, __entry->us,
		  __entry->result)
);

#endif /* _MNIC_TRACE_H */

/* This part must be outside the include guard. */
#include <trace/define_trace.h>
