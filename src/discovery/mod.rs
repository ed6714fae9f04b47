//! Where a target's addresses come from, behind one interface: [`Discovery::refresh`] asks a
//! source and returns an [`Update`] (addresses, a list, or a typed failure) for the state to
//! apply. DNS (`dns.rs`) and published lists (`published.rs`) touch the network; static addresses
//! come from the configuration and never refresh. Each source keeps what it needs across restarts
//! itself (published lists: their last good set on disk).

pub mod dns;
pub mod published;

use std::collections::BTreeSet;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::Config;
use crate::core::list::Validators;
use crate::core::state::{SourceId, SourceSpec, Update};

/// What the sources need to reach the network and the disk.
#[derive(Debug, Clone)]
pub struct Discovery {
    client: reqwest::Client,
}

impl Default for Discovery {
    fn default() -> Self {
        Self::new()
    }
}

impl Discovery {
    /// Sources with a fresh HTTP client for lists.
    pub fn new() -> Self {
        Self {
            client: published::client(),
        }
    }

    /// Asks one source; `validators` are the list's last ones, for a conditional request.
    pub async fn refresh(&self, config: Arc<Config>, id: SourceId, spec: SourceSpec, validators: Validators) -> Update {
        let target = &config.targets[id.target.0];
        match spec {
            SourceSpec::Dns => Update::Answers(dns::resolve(target, config.global.timeout).await),
            // The configuration is the static source: nothing to ask.
            SourceSpec::Static => Update::NotModified,
            SourceSpec::Published(list) => published::refresh(&self.client, &target.published[list], &validators).await,
        }
    }

    /// What a source kept from an earlier run, read once at start: `None` when it keeps nothing.
    pub fn restore(&self, config: &Config, id: SourceId, spec: SourceSpec) -> Option<Update> {
        let target = &config.targets[id.target.0];
        match spec {
            SourceSpec::Published(list) => {
                published::restore(&config.global.state_dir, &target.name, &target.published[list])
            }
            SourceSpec::Dns | SourceSpec::Static => None,
        }
    }

    /// Tells a source that the state took a new set from it, so it can keep it.
    pub fn accepted(&self, config: &Config, id: SourceId, spec: SourceSpec, set: &(BTreeSet<IpNet>, Validators)) {
        if let SourceSpec::Published(list) = spec {
            let target = &config.targets[id.target.0];
            published::persist(
                &config.global.state_dir,
                &target.name,
                &target.published[list],
                &set.0,
                &set.1,
            );
        }
    }
}
