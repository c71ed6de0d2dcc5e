//! A knowledge source is one body of company knowledge (a website, docs, a GitHub repository,
//! a help desk...) that the answer engine is grounded in, and the history of its syncs.
use crate::code::Code;
use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{domain_event, validate, DomainError};

/// The most settings a source may have.
pub const MAX_SETTINGS: usize = 32;

crate::text_enum! {
    /// What kind of knowledge a source holds.
    pub enum SourceKind {
        Website = "website",
        Docs = "docs",
        Github = "github",
        Zendesk = "zendesk",
        Confluence = "confluence",
        Notion = "notion",
        Slack = "slack",
        File = "file",
    }
}

impl SourceKind {
    fn validate_location(self, location: &str) -> Result<String, DomainError> {
        match self {
            SourceKind::Website | SourceKind::Docs => validate::http_url("location", location),
            SourceKind::Github => {
                let v = validate::text("location", Code::InvalidLocation, location, 2000)?;
                let is_repo = v.split('/').count() == 2
                    && v.split('/')
                        .all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
                if is_repo || v.starts_with("https://github.com/") {
                    Ok(v)
                } else {
                    Err(DomainError::new(
                        Code::InvalidLocation,
                        "a github source's location is `owner/repo` or a https://github.com/ URL",
                    ))
                }
            }
            _ => validate::text("location", Code::InvalidLocation, location, 2000),
        }
    }
}

/// Whether a source exists on the command side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// Never added.
    #[default]
    NotAdded,
    /// In use.
    Active,
    /// Removed; accepts no more commands.
    Removed,
}

/// Where a source's sync stands on the command side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SyncState {
    /// No sync requested.
    #[default]
    Idle,
    /// A sync was requested; no worker started it yet.
    Requested,
    /// A worker is syncing.
    Running {
        /// The running sync.
        sync_id: Uuid,
    },
}

/// What can be asked of a knowledge source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceCommand {
    /// Add the source.
    Add {
        /// What kind of knowledge it holds.
        kind: SourceKind,
        /// Its name.
        name: String,
        /// Where it is (a URL, `owner/repo`, an account...).
        location: String,
        /// Kind-specific settings (no secrets).
        settings: BTreeMap<String, String>,
    },
    /// Change some of its fields.
    Update {
        /// A new name.
        name: Option<String>,
        /// A new location.
        location: Option<String>,
        /// New settings.
        settings: Option<BTreeMap<String, String>>,
    },
    /// Remove the source.
    Remove,
    /// Ask for a sync.
    RequestSync {
        /// The requesting user.
        requested_by: String,
    },
    /// A worker started the requested sync.
    StartSync {
        /// The sync's id.
        sync_id: Uuid,
    },
    /// A worker finished the sync.
    CompleteSync {
        /// The sync finished.
        sync_id: Uuid,
        /// How many documents the source holds now.
        document_count: u64,
    },
    /// A worker could not finish the sync.
    FailSync {
        /// The sync that failed.
        sync_id: Uuid,
        /// What went wrong.
        error: String,
    },
}

/// What happened to a knowledge source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SourceEvent {
    /// The source was added.
    SourceAdded {
        /// What kind of knowledge it holds.
        kind: SourceKind,
        /// Its name.
        name: String,
        /// Where it is.
        location: String,
        /// Kind-specific settings.
        settings: BTreeMap<String, String>,
    },
    /// Some of its fields changed.
    SourceUpdated {
        /// The new name, if changed.
        name: Option<String>,
        /// The new location, if changed.
        location: Option<String>,
        /// The new settings, if changed.
        settings: Option<BTreeMap<String, String>>,
    },
    /// The source was removed.
    SourceRemoved {},
    /// A sync was asked for.
    SyncRequested {
        /// The requesting user.
        requested_by: String,
    },
    /// A worker started the sync.
    SyncStarted {
        /// The sync's id.
        sync_id: Uuid,
    },
    /// The sync finished.
    SyncCompleted {
        /// The sync finished.
        sync_id: Uuid,
        /// How many documents the source holds now.
        document_count: u64,
    },
    /// The sync failed.
    SyncFailed {
        /// The sync that failed.
        sync_id: Uuid,
        /// What went wrong.
        error: String,
    },
}

domain_event!(SourceEvent {
    SourceAdded,
    SourceUpdated,
    SourceRemoved,
    SyncRequested,
    SyncStarted,
    SyncCompleted,
    SyncFailed,
});

/// The knowledge source aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeSource {
    /// Whether it exists.
    pub status: SourceStatus,
    /// What kind of knowledge it holds (once added).
    pub kind: Option<SourceKind>,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub location: String,
    /// Kind-specific settings.
    pub settings: BTreeMap<String, String>,
    /// Where its sync stands.
    pub sync: SyncState,
    /// How many documents the last sync found.
    pub document_count: Option<u64>,
}

fn settings(value: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DomainError> {
    if value.len() > MAX_SETTINGS {
        return Err(DomainError::new(
            Code::InvalidSettings,
            format!("at most {MAX_SETTINGS} settings are allowed"),
        ));
    }
    for (k, v) in &value {
        validate::text("setting name", Code::InvalidSettings, k, 100)?;
        validate::no_nul("a setting's value", Code::InvalidSettings, v)?;
        if v.chars().count() > 2000 {
            return Err(DomainError::new(
                Code::InvalidSettings,
                format!("setting `{k}` is longer than 2000 characters"),
            ));
        }
        if k.to_ascii_lowercase().contains("secret")
            || k.to_ascii_lowercase().contains("password")
            || k.to_ascii_lowercase().contains("token")
        {
            return Err(DomainError::new(
                Code::InvalidSettings,
                format!("setting `{k}` looks like a credential; store a secret reference instead"),
            ));
        }
    }
    Ok(value)
}

impl KnowledgeSource {
    fn ensure_active(&self) -> Result<(), DomainError> {
        match self.status {
            SourceStatus::Active => Ok(()),
            SourceStatus::NotAdded => Err(DomainError::new(
                Code::SourceNotFound,
                "no such knowledge source",
            )),
            SourceStatus::Removed => Err(DomainError::new(
                Code::SourceRemoved,
                "the knowledge source has been removed",
            )),
        }
    }

    fn running(&self, sync_id: Uuid) -> Result<(), DomainError> {
        match self.sync {
            SyncState::Running { sync_id: running } if running == sync_id => Ok(()),
            _ => Err(DomainError::new(
                Code::SyncNotRunning,
                "no sync with that id is running for this source",
            )),
        }
    }

    fn decide(&self, command: SourceCommand) -> Result<SourceEvent, DomainError> {
        if let SourceCommand::Add {
            kind,
            name,
            location,
            settings: s,
        } = command
        {
            if self.status != SourceStatus::NotAdded {
                return Err(DomainError::new(
                    Code::SourceExists,
                    "a knowledge source with this id exists",
                ));
            }
            return Ok(SourceEvent::SourceAdded {
                kind,
                name: validate::text("name", Code::InvalidName, &name, 200)?,
                location: kind.validate_location(&location)?,
                settings: settings(s)?,
            });
        }
        self.ensure_active()?;
        Ok(match command {
            SourceCommand::Add { .. } => unreachable!("handled above"),
            SourceCommand::Update {
                name,
                location,
                settings: s,
            } => {
                if name.is_none() && location.is_none() && s.is_none() {
                    return Err(DomainError::new(
                        Code::EmptyUpdate,
                        "give at least one of name, location, settings",
                    ));
                }
                let kind = self.kind.unwrap_or(SourceKind::File);
                SourceEvent::SourceUpdated {
                    name: name
                        .map(|n| validate::text("name", Code::InvalidName, &n, 200))
                        .transpose()?,
                    location: location.map(|l| kind.validate_location(&l)).transpose()?,
                    settings: s.map(settings).transpose()?,
                }
            }
            SourceCommand::Remove => SourceEvent::SourceRemoved {},
            SourceCommand::RequestSync { requested_by } => {
                if self.sync != SyncState::Idle {
                    return Err(DomainError::new(
                        Code::SyncInProgress,
                        "a sync of this source is already requested or running",
                    ));
                }
                SourceEvent::SyncRequested { requested_by }
            }
            SourceCommand::StartSync { sync_id } => {
                if self.sync != SyncState::Requested {
                    return Err(DomainError::new(
                        Code::SyncNotRequested,
                        "a sync starts only after it was requested",
                    ));
                }
                SourceEvent::SyncStarted { sync_id }
            }
            SourceCommand::CompleteSync {
                sync_id,
                document_count,
            } => {
                self.running(sync_id)?;
                SourceEvent::SyncCompleted {
                    sync_id,
                    document_count,
                }
            }
            SourceCommand::FailSync { sync_id, error } => {
                self.running(sync_id)?;
                SourceEvent::SyncFailed {
                    sync_id,
                    error: validate::text("error", Code::InvalidError, &error, 2000)?,
                }
            }
        })
    }
}

impl Aggregate for KnowledgeSource {
    const TYPE: &'static str = "knowledge_source";
    type Command = SourceCommand;
    type Event = SourceEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SourceEvent::SourceAdded {
                kind,
                name,
                location,
                settings,
            } => {
                self.status = SourceStatus::Active;
                self.kind = Some(kind);
                self.name = name;
                self.location = location;
                self.settings = settings;
            }
            SourceEvent::SourceUpdated {
                name,
                location,
                settings,
            } => {
                if let Some(n) = name {
                    self.name = n;
                }
                if let Some(l) = location {
                    self.location = l;
                }
                if let Some(s) = settings {
                    self.settings = s;
                }
            }
            SourceEvent::SourceRemoved {} => {
                self.status = SourceStatus::Removed;
                self.sync = SyncState::Idle;
            }
            SourceEvent::SyncRequested { .. } => self.sync = SyncState::Requested,
            SourceEvent::SyncStarted { sync_id } => self.sync = SyncState::Running { sync_id },
            SourceEvent::SyncCompleted { document_count, .. } => {
                self.sync = SyncState::Idle;
                self.document_count = Some(document_count);
            }
            SourceEvent::SyncFailed { .. } => self.sync = SyncState::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<KnowledgeSource>;

    fn added() -> Vec<SourceEvent> {
        vec![SourceEvent::SourceAdded {
            kind: SourceKind::Docs,
            name: "Docs".into(),
            location: "https://docs.acme.test".into(),
            settings: BTreeMap::new(),
        }]
    }

    #[tokio::test]
    async fn a_source_is_added_with_a_location_fit_for_its_kind() {
        Given::with(())
            .given_no_previous_events()
            .when_async(SourceCommand::Add {
                kind: SourceKind::Docs,
                name: " Docs ".into(),
                location: "https://docs.acme.test".into(),
                settings: BTreeMap::new(),
            })
            .await
            .then_expect_events(added());
        let err = Given::with(())
            .given_no_previous_events()
            .when_async(SourceCommand::Add {
                kind: SourceKind::Website,
                name: "Site".into(),
                location: "ftp://acme.test".into(),
                settings: BTreeMap::new(),
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidLocation);
    }

    #[tokio::test]
    async fn credentials_never_go_into_settings() {
        let err = Given::with(())
            .given_no_previous_events()
            .when_async(SourceCommand::Add {
                kind: SourceKind::Zendesk,
                name: "Help".into(),
                location: "acme.zendesk.com".into(),
                settings: BTreeMap::from([("api_token".to_string(), "abc".to_string())]),
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidSettings);
    }

    #[tokio::test]
    async fn no_sync_of_a_removed_source() {
        let mut given = added();
        given.push(SourceEvent::SourceRemoved {});
        let err = Given::with(())
            .given(given)
            .when_async(SourceCommand::RequestSync {
                requested_by: "alice".into(),
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::SourceRemoved);
    }

    #[tokio::test]
    async fn a_sync_runs_requested_started_then_completed() {
        let sync_id = Uuid::from_u128(7);
        let mut given = added();
        given.push(SourceEvent::SyncRequested {
            requested_by: "alice".into(),
        });
        let err = Given::with(())
            .given(given.clone())
            .when_async(SourceCommand::RequestSync {
                requested_by: "alice".into(),
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::SyncInProgress);
        given.push(SourceEvent::SyncStarted { sync_id });
        let err = Given::with(())
            .given(given.clone())
            .when_async(SourceCommand::CompleteSync {
                sync_id: Uuid::from_u128(8),
                document_count: 3,
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::SyncNotRunning);
        Given::with(())
            .given(given)
            .when_async(SourceCommand::CompleteSync {
                sync_id,
                document_count: 42,
            })
            .await
            .then_expect_events(vec![SourceEvent::SyncCompleted {
                sync_id,
                document_count: 42,
            }]);
    }

    #[tokio::test]
    async fn a_sync_cannot_start_unrequested() {
        let err = Given::with(())
            .given(added())
            .when_async(SourceCommand::StartSync {
                sync_id: Uuid::from_u128(1),
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::SyncNotRequested);
    }

    #[tokio::test]
    async fn an_update_must_change_something_and_the_source_must_exist() {
        let err = Given::with(())
            .given(added())
            .when_async(SourceCommand::Update {
                name: None,
                location: None,
                settings: None,
            })
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::EmptyUpdate);
        let err = Given::with(())
            .given_no_previous_events()
            .when_async(SourceCommand::Remove)
            .await
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code, Code::SourceNotFound);
    }
}
