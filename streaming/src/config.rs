use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How to reach the cluster and name the topics. Works unchanged against Apache Kafka: set the
/// bootstrap servers, the security protocol and SASL settings; anything else librdkafka knows
/// goes through `properties`.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    /// Off: no relay, no projections (commands still work).
    pub enabled: bool,
    pub bootstrap_servers: String,
    pub client_id: String,
    /// Topics are `{topic_prefix}.{aggregate_type}`, dead letters `{topic_prefix}.dead-letter`.
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// `plaintext` (default), `ssl`, `sasl_plaintext`, `sasl_ssl`.
    pub security_protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, ...
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<SecretString>,
    /// Producer batching delay. 0 against tansu (it answers lingering clients slowly); 5-50 is
    /// the usual choice for Apache Kafka.
    pub linger_ms: u64,
    /// How long the producer keeps retrying one message before the relay sees a failure.
    pub message_timeout_ms: u64,
    /// Messages per record batch (librdkafka `batch.num.messages`). 1 for tansu 0.6, whose
    /// fetch from an offset inside a multi-message batch skips the rest of that batch, so a
    /// consumer resuming mid-batch would lose events (docs/streaming.md). Against Apache
    /// Kafka use librdkafka's default, 10000.
    pub producer_batch_messages: u32,
    /// Consumer group of the projections.
    pub consumer_group: String,
    /// Extra librdkafka properties, passed through as they are.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    pub relay: RelaySettings,
    /// Run the projections inside the server process.
    pub projections_in_process: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RelaySettings {
    /// Run the relay inside the server process (one instance publishes at a time regardless).
    pub in_process: bool,
    /// Its checkpoint and lock name: relays with one name share one position.
    pub name: String,
    pub batch_size: i64,
    pub idle_ms: u64,
}

impl KafkaSettings {
    pub fn topic(&self, aggregate_type: &str) -> String {
        format!("{}.{aggregate_type}", self.topic_prefix)
    }

    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dead-letter", self.topic_prefix)
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        if let Some(v) = &self.security_protocol {
            config.set("security.protocol", v);
        }
        if let Some(v) = &self.sasl_mechanism {
            config.set("sasl.mechanism", v);
        }
        if let Some(v) = &self.sasl_username {
            config.set("sasl.username", v);
        }
        if let Some(v) = &self.sasl_password {
            config.set("sasl.password", v.expose_secret());
        }
        self.with_properties(config)
    }

    /// `properties` go last, so an operator can override any default set here.
    fn with_properties(&self, mut config: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// Idempotent producer: acks from all replicas, retries without duplicates or reordering
    /// within a partition.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger_ms.to_string())
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set(
                "batch.num.messages",
                self.producer_batch_messages.to_string(),
            );
        self.with_properties(config)
    }

    /// A consumer that is assigned its partitions (`partition_owners`) and keeps its offsets in
    /// PostgreSQL: it never joins the group or commits to Kafka. `group.id` only names it.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Where a stored offset is no longer on the topic (retention): its earliest.
            .set("auto.offset.reset", "earliest")
            // tansu holds every fetch for the full wait even when data is there: a short wait
            // is what keeps command -> read model latency low (docs/benchmarks.md: p99 115 ms
            // at 50 ms, 33 ms at 10 ms). Against Apache Kafka, which answers a fetch as soon as
            // data arrives, it only adds cheap empty fetches; raise it there through
            // `kafka.properties` if they matter.
            .set("fetch.wait.max.ms", "10");
        self.with_properties(config)
    }
}
