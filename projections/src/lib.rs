//! The read side. Projections will consume the event stream (issue: "Stream the event store
//! through Kafka") and build the per-tenant read models, analytics and the audit trail.
//! Empty until then: the trunk's only reads are strongly consistent aggregate loads.
