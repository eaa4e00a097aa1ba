package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/tandem-lb/tandem/cluster"
)

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh" help:"bash or zsh."`
}

func (c *completionCmd) Help() string {
	return "Examples:\n\n" +
		"    source <(clusterctl completion bash)\n" +
		"    clusterctl completion zsh > \"${fpath[1]}/_clusterctl\""
}

func (c *completionCmd) Run(s *session, kctx *kong.Context) error {
	script := BashCompletion(kctx.Model.Node)
	if c.Shell == "zsh" {
		script = "#compdef clusterctl\n\n# zsh runs the bash completion through bashcompinit.\nautoload -U +X bashcompinit && bashcompinit\n\n" + script
	}
	_, err := io.WriteString(s.out, script)
	return err
}

// flagValues lists the values offered after a flag.
func flagValues(name string) []string {
	switch name {
	case "lbMethod":
		return enumNames(cluster.LBMethods)
	case "persistenceType":
		return enumNames(cluster.Persistences)
	case "connFailover":
		return enumNames(cluster.ConnFailovers)
	case "fwdMode":
		return enumNames(cluster.FwdModes)
	case "usip":
		return []string{"YES", "NO"}
	case "output":
		return []string{"table", "json", "yaml"}
	}
	return nil
}

func enumNames[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

// flagWords is how a flag is offered: ADC style, one dash.
func flagWords(flags []*kong.Flag) []string {
	var out []string
	for _, f := range flags {
		if f.Hidden || f.Name == "help" {
			continue
		}
		name := f.Name
		if name == "conn-node" {
			name = "node" // typed -node in show conn
		}
		out = append(out, "-"+name)
	}
	return out
}

// BashCompletion writes a bash completion function from the command model:
// command words, then the flags of the command reached, then flag values.
func BashCompletion(root *kong.Node) string {
	var b strings.Builder
	b.WriteString("# bash completion for clusterctl; generated from its command grammar.\n")
	b.WriteString("_clusterctl() {\n")
	b.WriteString("    local cur prev path=\"\" w i skip=0 opts=\"\"\n")
	b.WriteString("    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n")
	b.WriteString("    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n")
	b.WriteString("    for ((i = 1; i < COMP_CWORD; i++)); do\n")
	b.WriteString("        w=\"${COMP_WORDS[i]}\"\n")
	b.WriteString("        if ((skip)); then skip=0; continue; fi\n")
	b.WriteString("        case \"$w\" in\n")
	var valueFlags, boolFlags []string
	seen := map[string]bool{}
	var collect func(n *kong.Node)
	collect = func(n *kong.Node) {
		for _, f := range n.Flags {
			if seen[f.Name] {
				continue
			}
			seen[f.Name] = true
			words := []string{"-" + f.Name, "--" + f.Name}
			if f.Short != 0 {
				words = append(words, "-"+string(f.Short))
			}
			if f.Name == "conn-node" {
				words = append(words, "-node")
			}
			if f.IsBool() {
				boolFlags = append(boolFlags, words...)
			} else {
				valueFlags = append(valueFlags, words...)
			}
		}
		for _, c := range n.Children {
			collect(c)
		}
	}
	collect(root)
	// -node is a value flag in both meanings.
	valueFlags = append(valueFlags, "-node")
	slices.Sort(valueFlags)
	valueFlags = slices.Compact(valueFlags)
	slices.Sort(boolFlags)
	fmt.Fprintf(&b, "            %s) skip=1 ;;\n", strings.Join(valueFlags, "|"))
	b.WriteString("            -*) ;;\n")
	b.WriteString("            *) path=\"$path $w\" ;;\n")
	b.WriteString("        esac\n")
	b.WriteString("    done\n")
	b.WriteString("    path=\"${path# }\"\n")
	b.WriteString("    case \"$prev\" in\n")
	for _, name := range []string{"lbMethod", "persistenceType", "connFailover", "fwdMode", "usip", "output"} {
		pat := "-" + name + "|--" + name
		if name == "output" {
			pat += "|-o"
		}
		fmt.Fprintf(&b, "        %s) COMPREPLY=($(compgen -W %q -- \"$cur\")); return ;;\n", pat, strings.Join(flagValues(name), " "))
	}
	b.WriteString("        -f|--file) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n")
	b.WriteString("    esac\n")
	b.WriteString("    case \"$path\" in\n")
	// Global flags are offered in their canonical --form, command options
	// ADC-style with one dash.
	var globals []string
	for _, f := range root.Flags {
		if !f.Hidden && f.Name != "help" {
			globals = append(globals, "--"+f.Name)
		}
	}
	globals = append(globals, "-o")
	var walk func(n *kong.Node, path string)
	walk = func(n *kong.Node, path string) {
		var words []string
		for _, c := range n.Children {
			if c.Type == kong.CommandNode && !c.Hidden {
				words = append(words, c.Name)
			}
		}
		if n.Parent != nil {
			words = append(words, flagWords(n.Flags)...)
		}
		words = append(words, globals...)
		words = append(words, "--help")
		if n.Parent != nil && n.Leaf() {
			for _, p := range n.Positional {
				if p.Enum != "" {
					words = append(words, strings.Split(p.Enum, ",")...)
				}
			}
			fmt.Fprintf(&b, "        %q|%q*) opts=%q ;;\n", path, path+" ", strings.Join(words, " "))
		} else {
			fmt.Fprintf(&b, "        %q) opts=%q ;;\n", path, strings.Join(words, " "))
		}
		for _, c := range n.Children {
			if c.Type != kong.CommandNode || c.Hidden {
				continue
			}
			p := c.Name
			if path != "" {
				p = path + " " + c.Name
			}
			walk(c, p)
		}
	}
	walk(root, "")
	b.WriteString("    esac\n")
	b.WriteString("    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n")
	b.WriteString("}\n")
	b.WriteString("complete -F _clusterctl clusterctl\n")
	return b.String()
}
