package netns

import (
	"net"
	"time"
)

// DialTimeout bounds Dial.
const DialTimeout = 5 * time.Second

// Listen opens a stream listener (network "tcp", "tcp4", "tcp6", "unix")
// inside the namespace, closed on cleanup.
func (n *NetNS) Listen(network, addr string) net.Listener {
	n.tb.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
		n.tb.Fatalf("listening on %s %s in %s: %v", network, addr, n, err)
	}
	n.tb.Cleanup(func() { ln.Close() })
	return ln
}

// ListenPacket opens a packet socket ("udp", "udp4", "udp6") inside the
// namespace, closed on cleanup.
func (n *NetNS) ListenPacket(network, addr string) net.PacketConn {
	n.tb.Helper()
	var pc net.PacketConn
	if err := n.Do(func() (err error) { pc, err = net.ListenPacket(network, addr); return err }); err != nil {
		n.tb.Fatalf("listening on %s %s in %s: %v", network, addr, n, err)
	}
	n.tb.Cleanup(func() { pc.Close() })
	return pc
}

// Dial connects from inside the namespace, within DialTimeout; the
// connection is closed on cleanup.
func (n *NetNS) Dial(network, addr string) net.Conn {
	n.tb.Helper()
	c, err := n.DialErr(network, addr, DialTimeout)
	if err != nil {
		n.tb.Fatalf("dialing %s %s from %s: %v", network, addr, n, err)
	}
	n.tb.Cleanup(func() { c.Close() })
	return c
}

// DialErr connects from inside the namespace and returns the error instead
// of failing the test, for tests that expect a failure. The caller closes
// the connection.
func (n *NetNS) DialErr(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) { c, err = net.DialTimeout(network, addr, timeout); return err })
	return c, err
}
