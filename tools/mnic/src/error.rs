//! The result every subcommand returns: any error, printed with its causes by `main`.

/// Result of a subcommand.
pub type CmdResult<T = ()> = Result<T, Box<dyn std::error::Error>>;
