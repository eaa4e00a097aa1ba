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
//   - cluster.go, gossip.go: the thin memberlist adapter that owns the Store and the
//     Machine and performs effects. Gossip is encrypted (keyring, verified
//     both ways); local configuration changes are gossiped and also sent
//     to every member over memberlist's reliable channel, what a node
//     learns it gossips on, and push/pull repairs the rest; messages too
//     large for a gossip packet go over the reliable channel. Failure
//     detection is tightened (200ms probes, low suspicion multiplier), a
//     partner's death declaration (DeclareDead) spreads at once and is
//     undone if memberlist does not confirm it, and a graceful Leave is told
//     apart from a failure.
//   - health.go: TCP-connect monitors with ADC rise/fall.
package cluster
