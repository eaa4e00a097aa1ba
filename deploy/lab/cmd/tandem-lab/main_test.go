package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/tandem-lb/tandem/deploy/lab"
)

func TestPlanMatchesPackage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-nodes", "2", "-backends", "1", "plan"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	c := lab.Default()
	c.Nodes, c.Backends = 2, 1
	if want := lab.FormatPlan(c.Plan()); out.String() != want {
		t.Errorf("plan output differs from lab.FormatPlan:\n%s", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"-nodes", "99", "plan"}, "nodes"},
		{[]string{"-name", "NO", "plan"}, "lab name"},
		{[]string{"exec", "client"}, "exec needs"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, nil, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

func TestUpNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("as root up would build a lab; the root path is tested in deploy/lab")
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"up"}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "root") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}
