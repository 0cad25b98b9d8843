package coaptransport

import "errors"

// ErrClosed is returned by a Session's Fetch and Upload after Close.
var ErrClosed = errors.New("session closed")

// errNoServerCert is the verification failure of a handshake whose server sent no
// certificate; Open reports it as transport.ErrWrongRootCA.
var errNoServerCert = errors.New("server sent no certificate")
