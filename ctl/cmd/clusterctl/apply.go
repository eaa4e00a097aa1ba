package main

import (
	"fmt"
	"io"

	"github.com/tandem-lb/tandem/node/api"
)

type applyCmd struct {
	File   string `short:"f" required:"" help:"YAML file of services, vservers, bindings and monitors; - for stdin." placeholder:"FILE"`
	Prune  bool   `help:"Also remove objects the file does not declare (default: keep them)."`
	DryRun bool   `name:"dry-run" help:"Show what would change, change nothing."`
}

func (c *applyCmd) Help() string {
	return "Makes the cluster's configuration hold exactly the objects the file declares, in\n" +
		"one update: either every change is applied or, if any rule is broken, none.\n" +
		"Applying the same file twice changes nothing the second time. Objects the file\n" +
		"does not mention are kept unless --prune is given. The file has the form\n" +
		"'show config -o yaml' prints (port 0 means *).\n\nExamples:\n\n" +
		"    clusterctl show config -o yaml > cluster.yaml\n" +
		"    clusterctl apply -f cluster.yaml --dry-run\n" +
		"    clusterctl apply -f cluster.yaml --prune"
}

func (c *applyCmd) Run(s *session) error {
	data, err := s.readFile(c.File)
	if err != nil {
		return err
	}
	cfg, err := UnmarshalConfig(data)
	if err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	return s.verb(func(a *api.Client) (api.Result, error) {
		return a.Apply(s.ctx, api.ApplyRequest{Config: cfg, Prune: c.Prune, DryRun: c.DryRun})
	})
}

// readFile reads name through the environment; "-" is stdin.
func (s *session) readFile(name string) ([]byte, error) {
	if name == "-" {
		b, err := io.ReadAll(s.env.Stdin)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return b, nil
	}
	b, err := s.env.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return b, nil
}
