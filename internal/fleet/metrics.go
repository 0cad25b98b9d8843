package fleet

import (
	"bufio"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/provisiond/provisiond/internal/status"
)

// WriteMetrics writes s in the Prometheus text exposition format (version 0.0.4), every
// series labelled with instance and device_uuid. It is written by hand with the standard
// library: a client library would add its registry and protobuf code to the binary for a
// dozen lines of text. Counters come from the daemon's counts since its start, so a restart
// of an instance resets them, as Prometheus expects of counters.
func WriteMetrics(w io.Writer, s Snapshot) error {
	bw := bufio.NewWriter(w)
	fam := func(name, typ, help string, rows func(emit func(r Row, extra string, v float64))) {
		bw.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
		rows(func(r Row, extra string, v float64) {
			uuid := ""
			if r.Status != nil {
				uuid = r.Status.DeviceUUID
			}
			bw.WriteString(name + `{instance="` + escape(r.Instance) + `",device_uuid="` + escape(uuid) + `"` + extra + "} " +
				strconv.FormatFloat(v, 'g', -1, 64) + "\n")
		})
	}
	each := func(f func(r Row, st *status.Daemon, emit func(r Row, extra string, v float64))) func(func(Row, string, float64)) {
		return func(emit func(Row, string, float64)) {
			for _, r := range s.Instances {
				if r.Status != nil {
					f(r, r.Status, emit)
				}
			}
		}
	}
	fam("provisiond_up", "gauge", "1 when the instance answered on its control socket, 0 when it hangs or is gone.",
		func(emit func(Row, string, float64)) {
			for _, r := range s.Instances {
				emit(r, "", b2f(r.Status != nil))
			}
		})
	fam("provisiond_modem_up", "gauge", "1 when the instance has its modem, 0 while it waits for it.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			emit(r, "", b2f(st.State != status.StateWaitingForModem && st.State != status.StateStarting))
		}))
	fam("provisiond_attempts_total", "counter", "Provisioning attempts since the instance started, by the event they ended with.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			outcomes := make([]string, 0, len(st.Outcomes))
			for k := range st.Outcomes {
				outcomes = append(outcomes, string(k))
			}
			slices.Sort(outcomes)
			for _, o := range outcomes {
				emit(r, `,outcome="`+escape(o)+`"`, float64(st.Outcomes[status.EventName(o)]))
			}
		}))
	fam("provisiond_commands_total", "counter", "Commands executed since the instance started, by result.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			emit(r, `,result="ok"`, float64(max(st.CommandsExecuted-st.CommandsFailed, 0)))
			emit(r, `,result="failed"`, float64(st.CommandsFailed))
		}))
	fam("provisiond_last_success_timestamp_seconds", "gauge", "When the last successful attempt finished, in Unix seconds; absent before the first.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			if st.LastSuccess != nil {
				emit(r, "", float64(st.LastSuccess.UnixMilli())/1000)
			}
		}))
	fam("provisiond_results_waiting", "gauge", "Command results waiting for upload to the service.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			emit(r, "", float64(st.OutboxPending))
		}))
	fam("provisiond_handshakes_total", "counter", "TLS or DTLS handshakes with the Provisioning Service since the instance started, resumed ones included.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			emit(r, "", float64(st.HandshakesTotal))
		}))
	fam("provisiond_network_bytes_total", "counter", "Bytes exchanged with the Provisioning Service since the instance started, TLS or DTLS framing included, by direction.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			emit(r, `,direction="sent"`, float64(st.BytesSentTotal))
			emit(r, `,direction="received"`, float64(st.BytesReceivedTotal))
		}))
	fam("provisiond_last_attempt_handshakes", "gauge", "TLS or DTLS handshakes of the last finished attempt; absent before the first.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			if a := st.LastAttempt; a != nil {
				emit(r, "", float64(a.Handshakes))
			}
		}))
	fam("provisiond_last_attempt_network_bytes", "gauge", "Bytes the last finished attempt exchanged with the Provisioning Service, by direction; absent before the first.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			if a := st.LastAttempt; a != nil {
				emit(r, `,direction="sent"`, float64(a.BytesSent))
				emit(r, `,direction="received"`, float64(a.BytesReceived))
			}
		}))
	fam("provisiond_attempt_running", "gauge", "1 while a provisioning attempt runs.",
		each(func(r Row, st *status.Daemon, emit func(Row, string, float64)) {
			emit(r, "", b2f(st.State == status.StateProvisioning))
		}))
	return bw.Flush()
}

// escape escapes a label value as the text format wants: backslash, double quote, newline.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
