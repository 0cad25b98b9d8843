package transport

import (
	"net"
	"sync/atomic"
)

// Meter counts what a session spends on the wire. The zero value is ready; all methods are
// safe for concurrent use, so Stats can be read while a request runs.
type Meter struct {
	handshakes, resumed, requests    atomic.Int64
	bytesSent, bytesReceived         atomic.Int64
	datagramsSent, datagramsReceived atomic.Int64
}

// Handshake records one (D)TLS handshake; resumed says whether it reused a cached session.
func (m *Meter) Handshake(resumed bool) {
	m.handshakes.Add(1)
	if resumed {
		m.resumed.Add(1)
	}
}

// Request records one application request.
func (m *Meter) Request() { m.requests.Add(1) }

// Stats returns the running totals.
func (m *Meter) Stats() Stats {
	return Stats{
		Handshakes:        int(m.handshakes.Load()),
		ResumedHandshakes: int(m.resumed.Load()),
		Requests:          int(m.requests.Load()),
		BytesSent:         m.bytesSent.Load(),
		BytesReceived:     m.bytesReceived.Load(),
		DatagramsSent:     m.datagramsSent.Load(),
		DatagramsReceived: m.datagramsReceived.Load(),
	}
}

// Conn wraps a stream connection (TCP under TLS) so that every byte read or written is counted.
func (m *Meter) Conn(c net.Conn) net.Conn { return &meteredConn{Conn: c, m: m} }

// PacketConn wraps a connected datagram socket (UDP under DTLS): each Write is one datagram
// sent and each Read one datagram received.
func (m *Meter) PacketConn(c net.Conn) net.Conn { return &meteredConn{Conn: c, m: m, datagrams: true} }

type meteredConn struct {
	net.Conn
	m         *Meter
	datagrams bool
}

func (c *meteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.m.bytesReceived.Add(int64(n))
		if c.datagrams {
			c.m.datagramsReceived.Add(1)
		}
	}
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.m.bytesSent.Add(int64(n))
		if c.datagrams {
			c.m.datagramsSent.Add(1)
		}
	}
	return n, err
}
