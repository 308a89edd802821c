//! Reference apps of the crm-connectors workspace.
//!
//! Each reference app lives in this package as a Cargo example (`cargo run -p
//! crm-examples --example NAME`) and uses only the public APIs of the workspace
//! crates, so integrators can copy it as it is. The apps arrive with the issues
//! that build their parts (the bookings sync, reverse ETL into Salesforce, the
//! integration service).
#![forbid(unsafe_code)]
