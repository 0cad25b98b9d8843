package manpage

import (
	"bufio"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// File is a path the FILES section of a page names, with what it is.
type File struct {
	Path, Doc string
}

// CommandPage is what provisiond(8) says beyond the command tree.
type CommandPage struct {
	// Description is the DESCRIPTION section: what the program does, in paragraphs.
	Description string
	// Files, Signals and SeeAlso fill the sections of those names; empty ones are left out.
	Files   []File
	Signals string
	SeeAlso []string
}

// WriteCommand writes the section 8 page of root: its synopsis, the description, and every
// available subcommand at any depth with its usage, its text and its flags.
func WriteCommand(w io.Writer, root *cobra.Command, p CommandPage) error {
	r := roff{bufio.NewWriter(w)}
	name := root.Name()
	header(r, name, "8", "System Administration")
	r.macro("SH", "NAME")
	r.line(escape(name) + ` \- ` + escape(root.Short))
	r.macro("SH", "SYNOPSIS")
	r.line(bold(name) + " " + italic("command") + " [" + italic("options") + "] [" + italic("arguments") + "]")
	r.macro("SH", "DESCRIPTION")
	r.text(p.Description)
	if flags := visibleFlags(root.PersistentFlags()); len(flags) > 0 {
		r.macro("SH", "GLOBAL OPTIONS")
		writeFlags(r, flags)
	}
	r.macro("SH", "COMMANDS")
	for _, c := range subcommands(root) {
		writeCommand(r, c)
	}
	if p.Signals != "" {
		r.macro("SH", "SIGNALS")
		r.text(p.Signals)
	}
	if len(p.Files) > 0 {
		r.macro("SH", "FILES")
		for _, f := range p.Files {
			r.macro("TP")
			r.line(italic(f.Path))
			r.text(f.Doc)
		}
	}
	r.seeAlso(p.SeeAlso)
	return r.Flush()
}

// subcommands lists the available commands under c, depth first, in cobra's order; hidden
// and deprecated commands and cobra's own help command are left out.
func subcommands(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range c.Commands() {
		if !sub.IsAvailableCommand() || sub.IsAdditionalHelpTopicCommand() {
			continue
		}
		out = append(out, sub)
		out = append(out, subcommands(sub)...)
	}
	return out
}

func writeCommand(r roff, c *cobra.Command) {
	use := c.CommandPath()
	if _, args, ok := strings.Cut(c.Use, " "); ok {
		use += " " + args
	}
	r.macro("SS", use)
	text := c.Long
	if text == "" {
		text = c.Short
	}
	r.text(text)
	if c.Example != "" {
		r.macro("PP")
		r.line("Examples:")
		r.literal(strings.Split(strings.Trim(c.Example, "\n"), "\n"))
	}
	if flags := visibleFlags(c.LocalNonPersistentFlags()); len(flags) > 0 {
		r.macro("PP")
		r.line("Options:")
		writeFlags(r, flags)
	}
}

func visibleFlags(fs *pflag.FlagSet) []*pflag.Flag {
	var out []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" && f.Deprecated == "" {
			out = append(out, f)
		}
	})
	return out
}

func writeFlags(r roff, flags []*pflag.Flag) {
	for _, f := range flags {
		varname, usage := pflag.UnquoteUsage(f)
		if !strings.Contains(f.Usage, "`") {
			// pflag names the value after its type ("string"); the flag's name says more.
			varname = f.Name
		}
		spec := ""
		if f.Shorthand != "" {
			spec = bold("-"+f.Shorthand) + ", "
		}
		spec += bold("--" + f.Name)
		if varname != "" && f.Value.Type() != "bool" {
			spec += " " + italic(strings.ToUpper(varname))
		}
		r.macro("TP")
		r.line(spec)
		if def := f.DefValue; def != "" && def != "false" && def != "[]" && def != "0" {
			usage += " (default: " + def + ")"
		}
		r.line(escape(usage))
	}
}
