package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// maxCAFileSize bounds what CheckTargets reads of a CA file; a bundle of every public root is
// about 250 KiB.
const maxCAFileSize = 4 << 20

// CheckTargets checks what the keys of a loaded configuration point at, as far as it can
// without the modem or the network: that a CA file is readable and holds at least one PEM
// certificate, that the hooks folder is a readable folder and that the on_finished program
// is an executable file. Load does not do this, so a configuration can be checked on another
// machine; `provisiond config check` does. Notes are facts that are no error (a missing hooks
// folder means no hooks).
func CheckTargets(c *Config) (problems []Problem, notes []string) {
	for _, ca := range []struct{ key, path string }{
		{"http.ca_file", c.HTTP.CAFile},
		{"coap.ca_file", c.CoAP.CAFile},
	} {
		if ca.path == "" {
			continue
		}
		if msg := checkCAFile(ca.path); msg != "" {
			problems = append(problems, Problem{Key: ca.key, Msg: msg})
		}
	}
	if dir := c.Provisioning.HooksDir; dir != "" {
		switch fi, err := os.Stat(dir); {
		case errors.Is(err, fs.ErrNotExist):
			notes = append(notes, fmt.Sprintf("provisioning.hooks_dir: %s does not exist, so no hooks run", dir))
		case err != nil:
			problems = append(problems, Problem{Key: "provisioning.hooks_dir", Msg: err.Error()})
		case !fi.IsDir():
			problems = append(problems, Problem{Key: "provisioning.hooks_dir", Msg: dir + " is not a folder"})
		default:
			if _, err := os.ReadDir(dir); err != nil {
				problems = append(problems, Problem{Key: "provisioning.hooks_dir", Msg: err.Error()})
			}
		}
	}
	if c.Provisioning.OnFinished == OnFinishedExec && c.Provisioning.OnFinishedExec != "" {
		prog := c.Provisioning.OnFinishedExec
		if fields := strings.Fields(prog); len(fields) > 0 {
			prog = fields[0]
		}
		switch fi, err := os.Stat(prog); {
		case err != nil:
			problems = append(problems, Problem{Key: "provisioning.on_finished_exec", Msg: err.Error()})
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			problems = append(problems, Problem{Key: "provisioning.on_finished_exec", Msg: prog + " is not an executable file"})
		}
	}
	return problems, notes
}

// checkCAFile returns "" or what is wrong with a PEM file of roots.
func checkCAFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCAFileSize+1))
	switch {
	case err != nil:
		return fmt.Sprintf("read %s: %v", path, err)
	case len(data) > maxCAFileSize:
		return fmt.Sprintf("%s is larger than %d bytes; not a CA file", path, maxCAFileSize)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Sprintf("%s holds no PEM certificate", path)
	}
	return ""
}
