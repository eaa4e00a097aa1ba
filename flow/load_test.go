package flow

import (
	"errors"
	"os"
	"testing"
)

// needRoot skips tests that load BPF when not root.
func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root and BPF (BPF_PROG_TEST_RUN, XDP, network namespaces)")
	}
}

func newDatapath(tb testing.TB, cfg Config) *Datapath {
	tb.Helper()
	needRoot(tb)
	d, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return d
}

func TestLoad(t *testing.T) {
	d := newDatapath(t, Config{TableSize: 251, MaxVServers: 4})
	if got := d.Config(); got.TableSize != 251 || got.MaxBackends != 4096 || got.FlowTableSize != 262144 {
		t.Errorf("config with defaults = %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{TableSize: 1},
		{TableSize: 65537, MaxVServers: 1 << 16},
		{MaxBackends: 1},
		{XDPMode: 7},
	} {
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", c, err)
		}
	}
}
