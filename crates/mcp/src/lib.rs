//! MCP stdio server over the agentsecrets engine.
//!
//! Not built yet: the MCP server is tracked by its own issue. The crate exists so that
//! the workspace layout matches the design from the first commit.
