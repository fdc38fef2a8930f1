package router

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Limits applied to the untrusted bytes a client sends before it is routed.
const (
	// MaxClientHelloLen bounds the ClientHello handshake message (4-byte handshake header included).
	// Real ClientHellos are 200 bytes to ~2 KiB (a few KiB with post-quantum key shares).
	MaxClientHelloLen = 16 << 10
	// MaxClientHelloRecords bounds how many TLS records a fragmented ClientHello may span.
	MaxClientHelloRecords = 32
	// MaxClientHelloBytes bounds the raw bytes ReadHello ever reads (records and their headers).
	MaxClientHelloBytes = MaxClientHelloLen + MaxClientHelloRecords*recordHeaderLen

	recordHeaderLen    = 5
	maxRecordPlaintext = 1 << 14 // RFC 8446 §5.1: TLSPlaintext.length MUST NOT exceed 2^14

	recordTypeHandshake   = 0x16
	handshakeTypeClientHi = 0x01
	extServerName         = 0x0000
	extALPN               = 0x0010
	sniHostName           = 0x00

	// MaxALPNProtocols bounds the protocols a ClientHello may offer (real clients offer 1 to 3).
	MaxALPNProtocols = 32
)

// Hello is what the router takes from a ClientHello.
type Hello struct {
	// ServerName is the SNI host_name, lowercased and validated as a DNS name.
	ServerName string
	// ALPN lists the application protocols offered (RFC 7301), in the client's order; nil without the
	// extension.
	ALPN []string
}

// Offers reports whether the client offered ALPN protocol proto.
func (h Hello) Offers(proto string) bool {
	for _, p := range h.ALPN {
		if p == proto {
			return true
		}
	}
	return false
}

// Errors returned by ReadHello and ParseHello. Malformed input wraps ErrMalformed.
var (
	// ErrNotTLS: the first bytes are not a TLS handshake record (plain HTTP, SSLv2, garbage).
	ErrNotTLS = errors.New("router: not a TLS handshake record")
	// ErrMalformed: a TLS handshake record, but the ClientHello is truncated, oversized or inconsistent.
	ErrMalformed = errors.New("router: malformed ClientHello")
	// ErrNoServerName: a well-formed ClientHello without a server_name host_name.
	ErrNoServerName = errors.New("router: ClientHello has no server name")
	// ErrBadServerName: the host_name is not a valid DNS name (or is an IP literal, or has a trailing dot).
	ErrBadServerName = errors.New("router: ClientHello server name is not a valid DNS name")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// ReadHello reads, from the start of a TLS connection, exactly the TLS record(s) that carry the
// ClientHello, and nothing after them. The ClientHello may be fragmented over several handshake records.
// It returns the exact bytes read (to be replayed to the backend), the SNI host_name, lowercased and
// validated as a DNS name, and the ALPN protocols offered. It never reads more than MaxClientHelloBytes. On
// error, raw holds the bytes read so far and h is empty; a deadline on r is the caller's business.
func ReadHello(r io.Reader) (raw []byte, h Hello, err error) {
	raw = make([]byte, 0, 1024)
	var msg []byte // reassembled handshake payload
	need := -1     // total handshake message length once its header is known
	for records := 0; ; records++ {
		if records == MaxClientHelloRecords {
			return raw, Hello{}, malformed("ClientHello spans more than %d records", MaxClientHelloRecords)
		}
		var hdr [recordHeaderLen]byte
		off := 0
		if records == 0 {
			// Look at the first byte alone, so that a non-TLS client is refused without waiting for more.
			if _, err := io.ReadFull(r, hdr[:1]); err != nil {
				return raw, Hello{}, err // io.EOF: closed without sending anything
			}
			if hdr[0] != recordTypeHandshake {
				return append(raw, hdr[0]), Hello{}, ErrNotTLS
			}
			off = 1
		}
		if n, err := io.ReadFull(r, hdr[off:]); err != nil {
			return append(raw, hdr[:off+n]...), Hello{}, fmt.Errorf("router: reading TLS record header: %w", unexpectedEOF(err))
		}
		raw = append(raw, hdr[:]...)
		if hdr[0] != recordTypeHandshake {
			return raw, Hello{}, malformed("record of type %d interleaved in the ClientHello", hdr[0])
		}
		if hdr[1] != 3 || hdr[2] > 4 {
			if records == 0 {
				return raw, Hello{}, ErrNotTLS
			}
			return raw, Hello{}, malformed("record version %d.%d", hdr[1], hdr[2])
		}
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		if n == 0 {
			// RFC 8446 §5.1: zero-length fragments of handshake type MUST NOT be sent.
			return raw, Hello{}, malformed("empty handshake record")
		}
		if n > maxRecordPlaintext {
			return raw, Hello{}, malformed("record length %d exceeds 2^14", n)
		}
		if need >= 0 && len(msg)+n > need {
			return raw, Hello{}, malformed("data after the ClientHello in its last record")
		}
		if len(msg)+n > MaxClientHelloLen {
			return raw, Hello{}, malformed("ClientHello longer than %d bytes", MaxClientHelloLen)
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if m, err := io.ReadFull(r, raw[start:]); err != nil {
			return raw[:start+m], Hello{}, fmt.Errorf("router: reading TLS record: %w", unexpectedEOF(err))
		}
		msg = append(msg, raw[start:]...)
		if need < 0 && len(msg) >= 4 {
			if msg[0] != handshakeTypeClientHi {
				return raw, Hello{}, malformed("first handshake message has type %d, not ClientHello", msg[0])
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > MaxClientHelloLen {
				return raw, Hello{}, malformed("ClientHello length %d exceeds %d", need, MaxClientHelloLen)
			}
			if len(msg) > need {
				return raw, Hello{}, malformed("data after the ClientHello in its last record")
			}
		}
		if need >= 0 && len(msg) == need {
			h, err := parseClientHelloMessage(msg)
			return raw, h, err
		}
	}
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ParseHello is the pure form of ReadHello: hello must be exactly the TLS record(s) carrying a ClientHello
// (what ReadHello returns as raw), with no bytes after them.
func ParseHello(hello []byte) (Hello, error) {
	br := bytes.NewReader(hello)
	_, h, err := ReadHello(br)
	if err != nil {
		if err == io.EOF {
			return Hello{}, malformed("empty input")
		}
		return Hello{}, err
	}
	if br.Len() != 0 {
		return Hello{}, malformed("%d bytes after the ClientHello records", br.Len())
	}
	return h, nil
}

// cursor is a bounds-checked reader over a byte slice; every read checks the remaining length.
type cursor struct {
	b   []byte
	bad bool
}

func (c *cursor) bytes(n int) []byte {
	if c.bad || n < 0 || n > len(c.b) {
		c.bad = true
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u8() int {
	v := c.bytes(1)
	if v == nil {
		return -1
	}
	return int(v[0])
}

func (c *cursor) u16() int {
	v := c.bytes(2)
	if v == nil {
		return -1
	}
	return int(binary.BigEndian.Uint16(v))
}

// vec8 / vec16 read a length-prefixed vector (opaque<..2^8-1> / <..2^16-1>).
func (c *cursor) vec8() []byte  { return c.bytes(c.u8()) }
func (c *cursor) vec16() []byte { return c.bytes(c.u16()) }

// parseClientHelloMessage parses a complete ClientHello handshake message (type, uint24 length, body),
// whose type and length ReadHello has checked.
func parseClientHelloMessage(msg []byte) (Hello, error) {
	c := &cursor{b: msg[4:]}
	version := c.u16()
	if version >= 0 && version>>8 != 3 {
		return Hello{}, malformed("legacy_version %#04x", version)
	}
	c.bytes(32) // random
	if sid := c.vec8(); len(sid) > 32 {
		return Hello{}, malformed("session id of %d bytes", len(sid))
	}
	if cs := c.vec16(); !c.bad && (len(cs) < 2 || len(cs)%2 != 0) {
		return Hello{}, malformed("cipher_suites of %d bytes", len(cs))
	}
	if cm := c.vec8(); !c.bad && len(cm) < 1 {
		return Hello{}, malformed("no compression methods")
	}
	if c.bad {
		return Hello{}, malformed("truncated ClientHello")
	}
	if len(c.b) == 0 {
		return Hello{}, ErrNoServerName // no extensions at all (pre-TLS 1.2 style hello)
	}
	exts := c.vec16()
	if c.bad || len(c.b) != 0 {
		return Hello{}, malformed("extensions length does not match the message")
	}
	ec := &cursor{b: exts}
	seen := make(map[int]struct{}, 24)
	var sni, alpn []byte
	haveSNI, haveALPN := false, false
	for len(ec.b) > 0 {
		typ := ec.u16()
		data := ec.vec16()
		if ec.bad {
			return Hello{}, malformed("truncated extension")
		}
		if _, dup := seen[typ]; dup {
			return Hello{}, malformed("duplicate extension %d", typ)
		}
		seen[typ] = struct{}{}
		switch typ {
		case extServerName:
			sni, haveSNI = data, true
		case extALPN:
			alpn, haveALPN = data, true
		}
	}
	var h Hello
	if haveALPN {
		var err error
		if h.ALPN, err = parseALPNExtension(alpn); err != nil {
			return Hello{}, err
		}
	}
	if !haveSNI {
		return Hello{}, ErrNoServerName
	}
	name, err := parseServerNameExtension(sni)
	if err != nil {
		return Hello{}, err
	}
	h.ServerName = name
	return h, nil
}

// parseALPNExtension parses the extension_data of application_layer_protocol_negotiation (RFC 7301 §3.1):
// ProtocolName protocol_name_list<2..2^16-1>, each ProtocolName<1..2^8-1>. At most MaxALPNProtocols.
func parseALPNExtension(data []byte) ([]string, error) {
	c := &cursor{b: data}
	list := c.vec16()
	if c.bad || len(c.b) != 0 {
		return nil, malformed("ALPN list length does not match the extension")
	}
	if len(list) == 0 {
		return nil, malformed("empty ALPN list")
	}
	lc := &cursor{b: list}
	var out []string
	for len(lc.b) > 0 {
		p := lc.vec8()
		if lc.bad {
			return nil, malformed("truncated ALPN protocol name")
		}
		if len(p) == 0 {
			return nil, malformed("empty ALPN protocol name")
		}
		if len(out) == MaxALPNProtocols {
			return nil, malformed("more than %d ALPN protocols", MaxALPNProtocols)
		}
		out = append(out, string(p))
	}
	return out, nil
}

// parseServerNameExtension parses the extension_data of server_name (RFC 6066 §3).
func parseServerNameExtension(data []byte) (string, error) {
	c := &cursor{b: data}
	list := c.vec16()
	if c.bad || len(c.b) != 0 {
		return "", malformed("server_name list length does not match the extension")
	}
	if len(list) == 0 {
		return "", malformed("empty server_name list")
	}
	lc := &cursor{b: list}
	var host []byte
	found := false
	for len(lc.b) > 0 {
		typ := lc.u8()
		name := lc.vec16()
		if lc.bad {
			return "", malformed("truncated server_name entry")
		}
		if typ != sniHostName {
			continue // unknown name types are skipped
		}
		if found {
			return "", malformed("more than one host_name")
		}
		host, found = name, true
	}
	if !found {
		return "", ErrNoServerName
	}
	return normalizeHostName(host)
}

// normalizeHostName lowercases and validates a DNS host name: 1..253 bytes, dot-separated LDH labels of
// 1..63 bytes not starting or ending with '-', no trailing dot (RFC 6066), not an IP literal.
func normalizeHostName(b []byte) (string, error) {
	if len(b) == 0 || len(b) > 253 {
		return "", ErrBadServerName
	}
	out := make([]byte, len(b))
	label := 0
	for i, ch := range b {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9':
		case ch >= 'A' && ch <= 'Z':
			ch += 'a' - 'A'
		case ch == '-':
			if label == 0 || i == len(b)-1 || b[i+1] == '.' {
				return "", ErrBadServerName
			}
		case ch == '.':
			if label == 0 {
				return "", ErrBadServerName // empty label, leading dot or ".."
			}
			label = -1
		default:
			return "", ErrBadServerName
		}
		out[i] = ch
		label++
		if label > 63 {
			return "", ErrBadServerName
		}
	}
	if label == 0 {
		return "", ErrBadServerName // trailing dot
	}
	s := string(out)
	if _, err := netip.ParseAddr(s); err == nil {
		return "", ErrBadServerName
	}
	return s, nil
}
