// Package attempt measures what one provisioning attempt costs when the real engine
// (internal/daemon) drives the real AT client over a pty to the simulated nRF91 and the real
// transports to the simulated Provisioning Service, all in one process: AT commands and serial
// bytes against the minimum the job needs, handshakes, requests and bytes on the wire, next to
// the device library's connection pattern replayed with the same client.
//
// Everything is in the tests: `go test -run '^$' -bench . ./bench/attempt` for the figures,
// and TestJobCost (skipped with -short) checks the count targets: one handshake per attempt
// and at most 1.1 times the AT commands the job needs. The package has no code of its own and
// is not imported by anything.
package attempt
