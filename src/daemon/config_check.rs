//! The one check a configuration passes before it runs, at start (and `--check-config`)
//! and at every reload: it loads with every secret readable, and each watch's settings
//! pass its kind's checks. A reload can therefore never accept what start would refuse.

use crate::config::{Config, ConfigError, ConfigSource, Problems};
use crate::handlers::Registry;
use std::sync::Arc;

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigRefused {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A `[[watch]]` whose jobs its kind would refuse.
    #[error("{origin}: {problems}")]
    Watches { origin: String, problems: Problems },
}

/// Where the configuration comes from and the kinds that check it.
#[derive(Clone)]
pub struct ConfigLoader {
    source: ConfigSource,
    registry: Arc<Registry>,
}

impl ConfigLoader {
    pub fn new(source: ConfigSource, registry: Arc<Registry>) -> ConfigLoader {
        ConfigLoader { source, registry }
    }

    /// Loads the configuration as the daemon runs it, or says everything wrong with it.
    pub fn load(&self) -> Result<Config, ConfigRefused> {
        let config = Config::load_for_daemon(&self.source)?;
        self.registry
            .check_watches(&config)
            .map_err(|problems| ConfigRefused::Watches {
                origin: self.source.describe(),
                problems,
            })?;
        Ok(config)
    }

    pub fn describe(&self) -> String {
        self.source.describe()
    }
}
