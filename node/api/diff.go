package api

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/tandem-lb/tandem/cluster"
)

// Diff lists what turns configuration a into b: objects added, changed
// (with the fields that differ) and removed, monitors first, then
// services, vservers and bindings, each sorted by name. Both must be
// normalised.
func Diff(a, b cluster.Config) []Change {
	var out []Change
	out = diffKind(out, KindMonitor, a.Monitors, b.Monitors, func(m cluster.Monitor) string { return m.Name })
	out = diffKind(out, KindService, a.Services, b.Services, func(s cluster.Service) string { return s.Name })
	out = diffKind(out, KindVServer, a.VServers, b.VServers, func(v cluster.VServer) string { return v.Name })
	out = diffKind(out, KindBinding, a.Bindings, b.Bindings, func(x cluster.Binding) string { return x.VServer + "/" + x.Service })
	return out
}

func diffKind[T any](out []Change, kind Kind, a, b []T, key func(T) string) []Change {
	old := make(map[string]T, len(a))
	for _, x := range a {
		old[key(x)] = x
	}
	seen := make(map[string]bool, len(b))
	for _, y := range b {
		k := key(y)
		seen[k] = true
		x, ok := old[k]
		if !ok {
			out = append(out, Change{Action: Added, Kind: kind, Name: k})
			continue
		}
		if f := fieldDiff(x, y); len(f) > 0 {
			out = append(out, Change{Action: Changed, Kind: kind, Name: k, Fields: f})
		}
	}
	for _, x := range a {
		if k := key(x); !seen[k] {
			out = append(out, Change{Action: Removed, Kind: kind, Name: k})
		}
	}
	return out
}

// fieldDiff lists "field: old -> new" for the differing fields of two
// structs of the same type, naming fields as the CLI and YAML do.
func fieldDiff(a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
	var out []string
	for i := 0; i < t.NumField(); i++ {
		fa, fb := va.Field(i).Interface(), vb.Field(i).Interface()
		if reflect.DeepEqual(fa, fb) {
			continue
		}
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" {
			name = t.Field(i).Name
		}
		out = append(out, fmt.Sprintf("%s: %s -> %s", name, FormatValue(name, fa), FormatValue(name, fb)))
	}
	return out
}

// FormatValue formats a configuration value as an operator types it:
// ports as numbers or "*", booleans as YES/NO, durations as 500ms.
func FormatValue(field string, v any) string {
	switch x := v.(type) {
	case uint16:
		if field == "port" {
			return cluster.FormatPort(x)
		}
	case bool:
		if x {
			return "YES"
		}
		return "NO"
	case time.Duration:
		return x.String()
	case netip.Addr:
		if !x.IsValid() {
			return "-"
		}
		return x.String()
	case string:
		if x == "" {
			return `""`
		}
	}
	return fmt.Sprint(v)
}
