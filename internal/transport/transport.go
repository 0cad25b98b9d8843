// Package transport is the vocabulary shared by the provisioning transports (HTTPS and
// CoAP/DTLS) and their consumer: the request shapes of one provisioning round and the
// outcomes a caller branches on, independent of which transport produced them.
package transport

// FetchRequest is one "give me the next batch" request. The fields map one to one onto the
// query parameters of protocol.md §1.2 (HTTP) and §2.2 (CoAP).
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

// UploadRequest carries one CBOR-encoded response batch.
type UploadRequest struct {
	// JWT authenticates the request; it is a secret and never logged in full.
	JWT string
	// Body is the canonical CBOR response array.
	Body []byte
}

// Stats counts what an attempt cost on the wire. Transports keep running totals so that
// benchmarks and status output can compare them with what the device library would spend.
type Stats struct {
	Handshakes    int   // full or resumed (D)TLS handshakes
	Requests      int   // application requests sent (HTTP requests, CoAP exchanges)
	BytesSent     int64 // bytes written to the network, including TLS/DTLS framing
	BytesReceived int64 // bytes read from the network, including TLS/DTLS framing
}
