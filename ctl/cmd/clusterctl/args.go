package main

import (
	"slices"
	"strings"
)

// Operators type ADC-style options with one dash and in any case
// (-lbMethod srcipsrcporthash, -USIP yes); kong parses --lbMethod. RewriteArgs
// bridges the two, conservatively:
//
//   - only known option names are rewritten to their canonical spelling
//     (matched case-insensitively, with one or two dashes, with or without
//     "=value"); an unknown -word only gains a second dash so that kong
//     reports it by name, never guessed at;
//   - one-letter short flags (-o, -f, -h) are kong's own and stay as they are;
//   - command words (add, lb, vserver, ...) are lowered while they follow the
//     command tree, so "ADD LB VSERVER" works but object names keep their case;
//   - in "show conn", -node is the connection filter (--conn-node), while
//     --node (two dashes) stays the global node address;
//   - nothing after "--" is touched.

// canonicalFlag returns the canonical spelling of a lower-cased flag name,
// and whether it takes a value.
func canonicalFlag(lower string) (canon string, takesValue, known bool) {
	switch lower {
	case "usip", "monitor", "weight", "interval", "timeout", "rise", "fall", "vserver",
		"conn-node", "node", "token", "output", "file":
		return lower, true, true
	case "lbmethod":
		return "lbMethod", true, true
	case "persistencetype":
		return "persistenceType", true, true
	case "connfailover":
		return "connFailover", true, true
	case "fwdmode":
		return "fwdMode", true, true
	case "prune", "dry-run", "help":
		return lower, false, true
	}
	return "", false, false
}

// commandChildren returns the command words that may follow path (words
// joined by one space), for lowering them and for knowing where
// "show conn" starts.
func commandChildren(path string) []string {
	switch path {
	case "":
		return []string{"add", "set", "rm", "bind", "unbind", "show", "explain", "drain", "undrain", "apply", "batch", "completion"}
	case "add", "rm":
		return []string{"service", "lb"}
	case "set":
		return []string{"service", "lb"}
	case "add lb", "rm lb":
		return []string{"vserver", "monitor"}
	case "set lb":
		return []string{"vserver", "monitor"}
	case "bind lb", "unbind lb", "show lb":
		return []string{"vserver"}
	case "bind", "unbind":
		return []string{"lb"}
	case "show":
		return []string{"lb", "service", "cluster", "node", "rpcnode", "conn", "config"}
	case "explain":
		return []string{"flow"}
	case "drain", "undrain":
		return []string{"node"}
	}
	return nil
}

// RewriteArgs returns args with ADC-style flags and command words made
// kong-parsable. It never drops or reorders arguments.
func RewriteArgs(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	path := ""
	walking := true // still inside the command words
	for i := 0; i < len(out); i++ {
		a := out[i]
		if a == "--" {
			break
		}
		if len(a) > 2 && a[0] == '-' && isLetter(a[1]) || len(a) > 3 && strings.HasPrefix(a, "--") && isLetter(a[2]) {
			name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			single := a[1] != '-'
			lower := strings.ToLower(name)
			canon, takesValue, known := canonicalFlag(lower)
			if !known {
				// Unknown: kong reports it. With two dashes it names the
				// word the operator typed instead of a cluster of short
				// flags (-colour would read as -c -o -l ...).
				if single {
					out[i] = "-" + a
				}
				continue
			}
			if lower == "node" && single && path == "show conn" {
				canon = "conn-node"
			}
			if hasValue {
				out[i] = "--" + canon + "=" + value
				continue
			}
			out[i] = "--" + canon
			if takesValue && i+1 < len(out) {
				i++ // the value, whatever it looks like
			}
			continue
		}
		if len(a) == 2 && a[0] == '-' && (a[1] == 'o' || a[1] == 'f') {
			i++ // short flag and its value
			continue
		}
		if !walking {
			continue
		}
		lower := strings.ToLower(a)
		next := path + " " + lower
		if path == "" {
			next = lower
		}
		if contains(commandChildren(path), lower) {
			out[i] = lower
			path = next
			continue
		}
		walking = false
	}
	return out
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

func contains(list []string, s string) bool { return slices.Contains(list, s) }
