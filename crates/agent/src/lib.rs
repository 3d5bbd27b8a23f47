//! `libagent.so`, preloaded into traced applications: joins the registry,
//! attaches programs through the rewriter and runs them in-process.
//! Not implemented yet: see issue 5.
