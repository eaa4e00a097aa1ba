package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tandem-lb/tandem/test/chaos"
)

func TestPlanEach(t *testing.T) {
	scs := []chaos.Scenario{chaos.Kill9, chaos.Drain, chaos.LinkDown, chaos.SynAck}
	var got []string
	for _, r := range plan(scs, true, 3) {
		got = append(got, fmt.Sprintf("%s@%s", r.sc, r.node))
	}
	want := "kill9@n1 kill9@n2 kill9@n3 drain@ linkdown@n1 linkdown@n2 linkdown@n3 synack@"
	if strings.Join(got, " ") != want {
		t.Errorf("plan -each: %s, want %s", strings.Join(got, " "), want)
	}
	if p := plan(scs, false, 3); len(p) != 4 || p[0].node != "" {
		t.Errorf("plan without -each: %+v", p)
	}
}
