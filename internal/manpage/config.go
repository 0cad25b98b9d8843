package manpage

import (
	"bufio"
	"io"
	"strings"

	"github.com/provisiond/provisiond/internal/config"
)

// ConfigPage is what provisiond.yaml(5) says beyond the key table.
type ConfigPage struct {
	// Path is where the daemon reads the file by default.
	Path string
	// Description is the DESCRIPTION section, in paragraphs.
	Description string
	SeeAlso     []string
}

// WriteConfig writes the section 5 page of the configuration file: every key of the table,
// grouped by section, with its description, allowed values, default, environment variable
// and the device library's Kconfig option it stands for.
func WriteConfig(w io.Writer, p ConfigPage) error {
	r := roff{bufio.NewWriter(w)}
	header(r, "provisiond.yaml", "5", "File Formats")
	r.macro("SH", "NAME")
	r.line(`provisiond.yaml \- configuration of the provisiond daemon`)
	r.macro("SH", "SYNOPSIS")
	r.line(italic(p.Path))
	r.macro("SH", "DESCRIPTION")
	r.text(p.Description)
	r.macro("SH", "KEYS")
	section := ""
	for _, k := range config.Keys() {
		if s, _, _ := strings.Cut(k.Key, "."); s != section {
			section = s
			r.macro("SS", section)
		}
		r.macro("TP")
		r.line(bold(k.Key))
		r.text(k.Description)
		facts := []string{"Default: " + k.Default + "."}
		if k.Allowed != "" {
			facts = append([]string{"Allowed: " + k.Allowed + "."}, facts...)
		}
		facts = append(facts, "Environment: "+k.Env+".")
		if k.Kconfig != "" {
			facts = append(facts, "Device library option: "+k.Kconfig+".")
		}
		r.macro("br")
		r.line(escape(strings.Join(facts, " ")))
	}
	r.seeAlso(p.SeeAlso)
	return r.Flush()
}
