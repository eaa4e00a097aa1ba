package flow

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
)

// TestVerifierBudget keeps the program well under the verifier's 1M
// processed-instruction limit, so that the stateful work still fits: the
// inlined program once came within 0.4% of it. The FTP ALG (ftp_alg, with
// the ftp.h parser: about 45k on its own, flow/alg TestBPFVerifierBudget)
// took the program from 170k to 251k.
func TestVerifierBudget(t *testing.T) {
	const budget = 300000
	needRoot(t)
	spec, err := loadLb()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps["tables"].MaxEntries = 1024
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	for _, name := range []string{"xdp_lb", "xdp_full"} {
		log := coll.Programs[name].VerifierLog
		m := regexp.MustCompile(`processed (\d+) insns`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("%s: no instruction count in the verifier log: %q", name, log)
		}
		n, _ := strconv.Atoi(m[1])
		t.Logf("%s: verifier processed %d instructions (budget %d, limit 1000000)", name, n, budget)
		if n > budget {
			t.Errorf("%s: verifier processed %d instructions, over the budget of %d", name, n, budget)
		}
	}
}
