package node

import (
	"fmt"

	vnl "github.com/vishvananda/netlink"
)

func netlinkHandle() (*vnl.Handle, error) {
	h, err := vnl.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	return h, nil
}
