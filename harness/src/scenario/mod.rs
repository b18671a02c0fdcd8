//! Scenario files: the typed, validated description of a topology and the guide's steps in order.

mod error;
mod load;
mod model;
mod raw;
mod target;
mod validate;

pub use error::{ScenarioError, ScenarioErrors};
pub use load::{load_file, load_str};
pub use model::*;
pub use target::ServiceTarget;
