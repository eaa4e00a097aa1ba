// Package cluster is Tandem's control plane inside one node: the LB
// configuration model and its rules, the replicated configuration
// document, membership, pairs, agreed backend health, the Maglev tables
// every node computes alike, and health checks.
//
// The pieces, one file each:
//
//   - model.go, config.go, validate.go: the configuration (services,
//     vservers, bindings, monitors), defaults (Normalize), the
//     connection-failover rules of DESIGN.md (Validate returns *RuleError
//     values naming the rule and the fix) and Quarantine for merged
//     documents that break a rule.
//   - entry.go, store.go: replication. Every object carries a (Lamport
//     clock, node id) version, deletions are tombstones, Merge keeps the
//     highest version per object, so replicas converge whatever the order;
//     the document is persisted atomically in a state directory.
//   - codec.go: the versioned wire format of gossip and node metadata,
//     with decoders fuzzed to reject garbage without panicking.
//   - machine.go, tables.go: the deterministic state machine (Tick, events
//     in, Effects out) for members, pairs, health agreement, tables
//     (ComputeTables) and VIP readiness, tested by the scripts in testdata/.
//   - cluster.go: the thin memberlist adapter (encrypted gossip, delegates)
//     that owns the Store and the Machine and performs effects.
//   - health.go: TCP-connect monitors with ADC rise/fall.
package cluster
