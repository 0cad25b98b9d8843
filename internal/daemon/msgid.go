package daemon

import "go.uber.org/zap"

// MsgIDKey is the log field that names, in a fixed form, what a log entry reports. The
// message text is prose for people and may be reworded; the id is not, so log processing
// (and the end-to-end tests) match on it, as they match provisioning events on "event".
const MsgIDKey = "msg_id"

// The ids the daemon logs, with the entry that carries each.
const (
	msgModemMissing        = "modem-missing"         // warn: no modem at start; waiting for it
	msgModemLostAtOpen     = "modem-lost-at-open"    // warn: the port opened but the modem died at once
	msgModemDisconnected   = "modem-disconnected"    // warn: the modem went away; waiting for it
	msgModemBack           = "modem-back"            // info: the end of an outage
	msgModemLostInBatch    = "modem-lost-in-batch"   // warn: the modem went away during a batch
	msgSavedModeRestore    = "saved-mode-restore"    // warn: a mode saved before a stop or crash is restored
	msgModeRestoreFailed   = "mode-restore-failed"   // error: the modem's functional mode could not be restored
	msgSavedCMEERestore    = "saved-cmee-restore"    // warn: a CMEE value saved before a stop or crash is restored
	msgCMEERestoreFailed   = "cmee-restore-failed"   // warn or error: CMEE could not be restored
	msgRootCAFailed        = "root-ca-failed"        // error: the root CA could not be provisioned at modem open
	msgFetchRetried        = "fetch-retried"         // info: a fetch refused as too large is retried with the size named
	msgResultsUploaded     = "results-uploaded"      // info: a batch's results reached the service
	msgBatchRecovered      = "batch-recovered"       // warn: a batch interrupted by a stop or crash is reported
	MsgConfigReloadRefused = "config-reload-refused" // error: SIGHUP found an invalid config; the running one stays
	MsgModemAnswering      = "modem-answering"       // info: the modem opened and answers; attempts can run
)

// MsgID is the field naming what an entry reports (MsgIDKey).
func MsgID(id string) zap.Field { return zap.String(MsgIDKey, id) }
