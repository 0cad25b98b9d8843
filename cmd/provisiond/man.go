package main

import (
	"io"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/manpage"
)

// The manual pages the package installs: docs/man/provisiond.8 and docs/man/provisiond.yaml.5.
// They are generated from the command tree and the key table; man_test.go keeps the copies in
// docs/man equal to what these functions write.

func writeCommandManPage(w io.Writer) error {
	def := config.Default()
	return manpage.WriteCommand(w, newRootCmd(), manpage.CommandPage{
		Description: `provisiond provisions a Nordic nRF91 cellular modem attached to a Linux host over USB
serial from the nRF Cloud Provisioning Service. It fetches the commands queued for the device
over HTTPS or CoAP/DTLS, runs them on the modem with AT commands (taking the modem offline
while credentials are written and restoring its mode afterwards), and reports the results back,
at start, every provisioning.interval, and when asked.

"provisiond run" is the daemon; systemd runs it as provisiond.service for one modem or as
provisiond@NAME.service, one instance per modem, started by udev when a known board is plugged
in. The other commands talk to the running daemon over its control socket, or work offline on
the configuration, the settings store and the provisioning protocol's CBOR.

Under systemd the daemon logs to the journal with one field per fact (PROVISIOND_EVENT,
PROVISIOND_DEVICE_UUID, PROVISIOND_ATTEMPT, PROVISIOND_REASON, PROVISIOND_MODEM_PORT) and a
catalog entry per event: "journalctl -xu provisiond" says what each event means and what to do.`,
		Signals: `SIGTERM and SIGINT stop the daemon cleanly: the modem's functional mode is restored and
results not yet acknowledged stay in the settings store. SIGUSR1 starts a provisioning attempt
now. SIGHUP reloads the configuration file; an invalid file is refused and the running
configuration stays.`,
		Files: []manpage.File{
			{Path: config.DefaultPath, Doc: "The configuration; see provisiond.yaml(5)."},
			{Path: "/etc/default/provisiond", Doc: "PROVISIOND_* environment variables for the units, which beat the file."},
			{Path: "/etc/provisiond/hooks.d", Doc: "Executables run on every provisioning event (provisioning.hooks_dir)."},
			{Path: def.Store.Path, Doc: "The settings store: cursor, results waiting for upload and the device's settings (store.path)."},
			{Path: def.Control.Socket, Doc: `The control socket "now", "status", "token", "uuid" and "interval" talk to (control.socket).`},
			{Path: "/usr/lib/systemd/catalog/provisiond.catalog", Doc: "What each provisioning event means, for journalctl -x."},
		},
		SeeAlso: []string{"provisiond.yaml(5)", "journalctl(1)", "systemd.service(5)", "udev(7)"},
	})
}

func writeConfigManPage(w io.Writer) error {
	return manpage.WriteConfig(w, manpage.ConfigPage{
		Path: config.DefaultPath,
		Description: `The configuration of provisiond(8) is a YAML file of sections (modem, provisioning, http,
coap, store, control, log) holding the keys below. Every key is optional and has a default;
an unknown key, a value of the wrong type or a value out of range is an error that names the
key, and the daemon refuses to start with it (exit status 78). Durations take a unit: 500ms,
30s, 5m, 24h.

Every key can also be set from the environment as PROVISIOND_<SECTION>_<KEY>, shown with each
key; the environment beats the file. The units read /etc/default/provisiond for such
variables.

"provisiond config check" validates a file, "provisiond config show" prints the configuration
in effect and "provisiond config defaults" prints a commented file with every key at its
default. SIGHUP (systemctl reload) makes the running daemon read the file again.

"Device library option" names the option of the nRF Connect SDK's device-side provisioning
library a key corresponds to; keys without one exist on the host only.`,
		SeeAlso: []string{"provisiond(8)"},
	})
}
