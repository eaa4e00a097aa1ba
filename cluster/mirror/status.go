package mirror

import (
	"fmt"
	"sync"
	"time"
)

// LinkState is the state of a mirroring link, as `show rpcnode` shows it.
type LinkState uint8

const (
	LinkIdle LinkState = iota
	LinkConnecting
	// LinkSyncing: a bulk sync is in progress.
	LinkSyncing
	// LinkStreaming: the bulk sync is done; increments flow.
	LinkStreaming
	// LinkRefused: the last attempt was refused (Reason says why); the peer
	// gets no state.
	LinkRefused
	// LinkDown: the connection failed or closed (Reason says why).
	LinkDown
)

func (s LinkState) String() string {
	switch s {
	case LinkIdle:
		return "idle"
	case LinkConnecting:
		return "connecting"
	case LinkSyncing:
		return "syncing"
	case LinkStreaming:
		return "streaming"
	case LinkRefused:
		return "refused"
	case LinkDown:
		return "down"
	}
	return fmt.Sprintf("link(%d)", uint8(s))
}

// Status is a snapshot of one end of a mirroring link.
type Status struct {
	// Role is "sender" (this node owns the flows and mirrors them) or
	// "receiver" (this node keeps its partner's).
	Role string
	// Self, Peer (node ids) and Pair name the link; PeerAddr is the remote
	// address of the current or last connection.
	Self     string
	Peer     string
	PeerAddr string
	Pair     uint32
	// Auth is the authentication mode; Authenticated is true while an
	// authenticated connection is up.
	Auth          AuthMode
	Authenticated bool
	// PeerVersion is the protocol version the peer announced (0: unknown).
	PeerVersion uint16
	State       LinkState
	// Reason is why the link is refused or down, or the last error.
	Reason string
	// Entries counts records sent (sender) or applied (receiver); Bytes the
	// frame bytes read and written, Connections the connections
	// established.
	Entries     uint64
	Bytes       uint64
	Connections uint64
	// Lag is, on the sender, the time from enqueueing a change to the
	// receiver's acknowledgement of having applied it, for the last
	// acknowledged frame.
	Lag time.Duration
	// Acked is the sequence number of the last frame the receiver applied.
	Acked uint64
	// Invalid counts entries the sender could not encode (dropped) or
	// the receiver refused.
	Invalid uint64
	// SyncGeneration is the last bulk sync generation completed (sender:
	// acknowledged; receiver: applied), LastBulkSync when.
	SyncGeneration uint64
	LastBulkSync   time.Time
}

// statusBox guards a Status shared by a link's goroutines.
type statusBox struct {
	mu sync.Mutex
	st Status
}

func (b *statusBox) get() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

func (b *statusBox) update(f func(*Status)) {
	b.mu.Lock()
	f(&b.st)
	b.mu.Unlock()
}
