// Package rootca holds the public root certificates of the nRF Cloud Provisioning Service,
// copied verbatim from the project's shared certificate folder: the root the daemon writes into
// the modem's empty CA security tag, and the CoAP root it verifies the DTLS server against.
package rootca

import (
	_ "embed"
	"fmt"
)

// AmazonRootCA1 ends the chain of the HTTPS endpoint (provisioning-http.nrfcloud.com).
//
//go:embed amazon-root-ca-1.pem
var AmazonRootCA1 string

// NRFCloudCoAP is the self-signed root of the CoAP/DTLS endpoint (coap.nrfcloud.com); it is in
// no system bundle.
//
//go:embed nrf-cloud-coap-root-ca.pem
var NRFCloudCoAP string

// ForTransport returns the service root for transport "http" or "coap".
func ForTransport(transport string) (string, error) {
	switch transport {
	case "http":
		return AmazonRootCA1, nil
	case "coap":
		return NRFCloudCoAP, nil
	}
	return "", fmt.Errorf("rootca: unknown transport %q", transport)
}
