// Package transport is the vocabulary shared by the provisioning transports (HTTPS and
// CoAP/DTLS) and their consumer: the request shapes of one provisioning round and the
// outcomes a caller branches on, independent of which transport produced them.
package transport

// FetchRequest is one "give me the next batch" request. The fields map one to one onto the
// query parameters of docs/protocol.md §1.2 (HTTP) and §2.2 (CoAP).
type FetchRequest struct {
	// After is the cursor: the correlation id of the last command processed, empty on first run.
	After string
	// RxMaxSize is the largest response the client accepts, in bytes (rxMaxSize).
	RxMaxSize int
	// TxMaxSize is the largest response batch the client will upload, in bytes (txMaxSize).
	TxMaxSize int
	// Limit is the most commands the client takes in one batch (limit).
	Limit int
	// ModemVersion is the text after "%SHORTSWVER: " (mver).
	ModemVersion string
	// ClientVersion is the client's version string (cver).
	ClientVersion string
	// JWT authenticates the request; it is a secret and never logged in full.
	JWT string
}

// Device-library defaults for the size fields of a FetchRequest (docs/protocol.md §7, §9).
const (
	DefaultRxMaxSize = 1024 // NRF_PROVISIONING_RX_BUF_SZ
	DefaultTxMaxSize = 2048 // NRF_PROVISIONING_TX_BUF_SZ
	DefaultLimit     = 10   // NRF_PROVISIONING_CBOR_RECORDS
)

// WithDefaults returns r with every zero or negative size field set to the device default,
// so that a transport never advertises rxMaxSize=0.
func (r FetchRequest) WithDefaults() FetchRequest {
	if r.RxMaxSize <= 0 {
		r.RxMaxSize = DefaultRxMaxSize
	}
	if r.TxMaxSize <= 0 {
		r.TxMaxSize = DefaultTxMaxSize
	}
	if r.Limit <= 0 {
		r.Limit = DefaultLimit
	}
	return r
}

// UploadRequest carries one CoAP- or HTTP-ready response batch.
type UploadRequest struct {
	// JWT authenticates the request; it is a secret and never logged in full.
	JWT string
	// Body is the canonical CBOR response array.
	Body []byte
	// ModemVersion and ClientVersion are the mver/cver sent when CoAP has to authenticate
	// before this upload (a pending outbox uploaded before any fetch, or a new JWT). Empty
	// means "as on the last fetch of this session". HTTP does not use them.
	ModemVersion, ClientVersion string
}

// Stats counts what an attempt cost on the wire. Transports keep running totals so that
// benchmarks and status output can compare them with what the device library would spend.
type Stats struct {
	Handshakes        int   // full or resumed (D)TLS handshakes
	ResumedHandshakes int   // how many of Handshakes resumed a cached session
	Requests          int   // application requests sent (HTTP requests, CoAP exchanges)
	BytesSent         int64 // bytes written to the network, including TLS/DTLS framing
	BytesReceived     int64 // bytes read from the network, including TLS/DTLS framing
	DatagramsSent     int64 // CoAP only: UDP datagrams written (retransmissions and blocks included)
	DatagramsReceived int64 // CoAP only: UDP datagrams read
}

// Add returns the sum of s and o, field by field: the cost of several sessions or attempts.
func (s Stats) Add(o Stats) Stats {
	s.Handshakes += o.Handshakes
	s.ResumedHandshakes += o.ResumedHandshakes
	s.Requests += o.Requests
	s.BytesSent += o.BytesSent
	s.BytesReceived += o.BytesReceived
	s.DatagramsSent += o.DatagramsSent
	s.DatagramsReceived += o.DatagramsReceived
	return s
}
