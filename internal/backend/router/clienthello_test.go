package router

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadHelloRealClients(t *testing.T) {
	want := map[string]string{
		"default":    "app-1.example.com",
		"tls12":      "mixed.case.example",
		"tls13-alpn": "a.b.c.d.example",
		"tls10":      "old.example",
		"long-name":  strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example",
	}
	for name, cfg := range helloConfigs() {
		t.Run(name, func(t *testing.T) {
			hello := captureClientHello(t, cfg)
			for _, frag := range []int{0, 1, 7, 50, 100, 512} {
				in := hello
				if frag > 0 {
					if (len(hello)-5+frag-1)/frag > MaxClientHelloRecords {
						continue // more records than allowed; covered by TestReadHelloLimits
					}
					in = fragment(t, hello, frag)
				}
				// Trailing bytes (the rest of the connection) must not be consumed.
				r := io.MultiReader(iotest.HalfReader(bytes.NewReader(in)), strings.NewReader("TRAILER"))
				raw, h, err := ReadHello(r)
				sni := h.ServerName
				if w, ok := want[name]; ok {
					if err != nil || sni != w {
						t.Fatalf("frag %d: got %q, %v; want %q", frag, sni, err, w)
					}
				} else if !errors.Is(err, ErrNoServerName) {
					t.Fatalf("frag %d: got %q, %v; want ErrNoServerName", frag, sni, err)
				}
				if !bytes.Equal(raw, in) {
					t.Fatalf("frag %d: raw differs from input (%d vs %d bytes)", frag, len(raw), len(in))
				}
				rest, _ := io.ReadAll(r)
				if string(rest) != "TRAILER" {
					t.Fatalf("frag %d: trailing bytes consumed: %q", frag, rest)
				}
				h2, err2 := ParseHello(in)
				if sni2 := h2.ServerName; sni2 != sni || (err == nil) != (err2 == nil) || err != nil && !errors.Is(err2, err) {
					t.Fatalf("ParseHello = %q, %v; ReadHello = %q, %v", sni2, err2, sni, err)
				}
			}
		})
	}
}

func TestReadHelloErrors(t *testing.T) {
	hello := captureClientHello(t, helloConfigs()["default"])
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), hello...)) }
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrNotTLS},
		{"sslv2", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0}, ErrNotTLS},
		{"bad version", mod(func(b []byte) []byte { b[1] = 2; return b }), ErrNotTLS},
		{"zero record", []byte{0x16, 3, 1, 0, 0}, ErrMalformed},
		{"record too long", []byte{0x16, 3, 1, 0x40, 0x01}, ErrMalformed},
		{"not client hello", mod(func(b []byte) []byte { b[5] = 2; return b }), ErrMalformed},
		{"truncated", hello[:len(hello)-1], io.ErrUnexpectedEOF},
		{"truncated header", hello[:3], io.ErrUnexpectedEOF},
		{"hello too long", mod(func(b []byte) []byte { b[6], b[7], b[8] = 0x01, 0, 0; return b }), ErrMalformed},
		{"extra in record", mod(func(b []byte) []byte {
			b = append(b, 0)
			n := binary.BigEndian.Uint16(b[3:5]) + 1
			binary.BigEndian.PutUint16(b[3:5], n)
			return b
		}), ErrMalformed},
		{"interleaved alert", append(fragment(t, hello, 50)[:55:55], 21, 3, 1, 0, 2, 2, 40), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, _, err := ReadHello(bytes.NewReader(c.in))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if len(raw) > len(c.in)+5 {
				t.Fatalf("raw longer than input")
			}
		})
	}
}

func TestReadHelloLimits(t *testing.T) {
	hello := captureClientHello(t, helloConfigs()["default"])
	// One byte per record: more than MaxClientHelloRecords records.
	if _, _, err := ReadHello(bytes.NewReader(fragment(t, hello, 1))); !errors.Is(err, ErrMalformed) {
		t.Fatalf("1-byte records: %v", err)
	}
	// An endless stream of records never reads past MaxClientHelloBytes.
	rec := append([]byte{0x16, 3, 1, 0x40, 0x00}, make([]byte, 1<<14)...)
	rec[5] = 1                             // client_hello
	rec[6], rec[7], rec[8] = 0, 0xff, 0xff // claims 64 KiB
	raw, _, err := ReadHello(io.MultiReader(bytes.NewReader(rec), bytes.NewReader(rec), bytes.NewReader(rec)))
	if !errors.Is(err, ErrMalformed) || len(raw) > MaxClientHelloBytes {
		t.Fatalf("err %v, read %d", err, len(raw))
	}
}

// buildHello assembles a ClientHello record with the given extensions block.
func buildHello(exts []byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session id
	body = append(body, 0, 2, 0x13, 0x01) // cipher suites
	body = append(body, 1, 0)             // compression
	if exts != nil {
		body = binary.BigEndian.AppendUint16(body, uint16(len(exts)))
		body = append(body, exts...)
	}
	msg := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	msg = append(msg, body...)
	rec := []byte{0x16, 3, 1}
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(msg)))
	return append(rec, msg...)
}

func sniExt(entries ...[]byte) []byte {
	var list []byte
	for _, e := range entries {
		list = append(list, e...)
	}
	data := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
	data = append(data, list...)
	ext := []byte{0, 0}
	ext = binary.BigEndian.AppendUint16(ext, uint16(len(data)))
	return append(ext, data...)
}

func hostEntry(typ byte, name string) []byte {
	e := []byte{typ}
	e = binary.BigEndian.AppendUint16(e, uint16(len(name)))
	return append(e, name...)
}

func TestParseHelloServerName(t *testing.T) {
	other := []byte{0, 0x2b, 0, 3, 2, 3, 4} // supported_versions
	cases := []struct {
		name string
		exts []byte
		want string
		err  error
	}{
		{"ok", sniExt(hostEntry(0, "Foo.Example")), "foo.example", nil},
		{"ok after other ext", append(other, sniExt(hostEntry(0, "x.y"))...), "x.y", nil},
		{"unknown name type skipped", sniExt(hostEntry(7, "zz"), hostEntry(0, "a.b")), "a.b", nil},
		{"single label", sniExt(hostEntry(0, "localhost")), "localhost", nil},
		{"digits", sniExt(hostEntry(0, "1a.example")), "1a.example", nil},
		{"no extensions", nil, "", ErrNoServerName},
		{"empty extensions", []byte{}, "", ErrNoServerName},
		{"no sni ext", other, "", ErrNoServerName},
		{"only other name type", sniExt(hostEntry(7, "zz")), "", ErrNoServerName},
		{"two host names", sniExt(hostEntry(0, "a.b"), hostEntry(0, "c.d")), "", ErrMalformed},
		{"duplicate ext", append(sniExt(hostEntry(0, "a.b")), sniExt(hostEntry(0, "a.b"))...), "", ErrMalformed},
		{"empty list", []byte{0, 0, 0, 2, 0, 0}, "", ErrMalformed},
		{"empty ext", []byte{0, 0, 0, 0}, "", ErrMalformed},
		{"truncated entry", []byte{0, 0, 0, 5, 0, 3, 0, 0, 9}, "", ErrMalformed},
		{"trailing dot", sniExt(hostEntry(0, "a.b.")), "", ErrBadServerName},
		{"leading dot", sniExt(hostEntry(0, ".a.b")), "", ErrBadServerName},
		{"double dot", sniExt(hostEntry(0, "a..b")), "", ErrBadServerName},
		{"empty name", sniExt(hostEntry(0, "")), "", ErrBadServerName},
		{"ipv4", sniExt(hostEntry(0, "10.0.0.1")), "", ErrBadServerName},
		{"ipv6", sniExt(hostEntry(0, "::1")), "", ErrBadServerName},
		{"underscore", sniExt(hostEntry(0, "a_b.c")), "", ErrBadServerName},
		{"nul", sniExt(hostEntry(0, "a\x00.b")), "", ErrBadServerName},
		{"utf8", sniExt(hostEntry(0, "é.b")), "", ErrBadServerName},
		{"hyphen start", sniExt(hostEntry(0, "-a.b")), "", ErrBadServerName},
		{"hyphen end", sniExt(hostEntry(0, "a-.b")), "", ErrBadServerName},
		{"label 64", sniExt(hostEntry(0, strings.Repeat("a", 64)+".b")), "", ErrBadServerName},
		{"name 254", sniExt(hostEntry(0, strings.Repeat("a.", 126)+"bc")), "", ErrBadServerName},
		{"name 253", sniExt(hostEntry(0, strings.Repeat("a.", 126)+"b")), strings.Repeat("a.", 126) + "b", nil},
		{"ext length mismatch", []byte{0, 0, 0, 9, 0}, "", ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := ParseHello(buildHello(c.exts))
			if got := h.ServerName; got != c.want || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, c.want, c.err)
			}
		})
	}
	if _, err := ParseHello(append(buildHello(sniExt(hostEntry(0, "a.b"))), 0x16)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func alpnExt(protos ...string) []byte {
	var list []byte
	for _, p := range protos {
		list = append(list, byte(len(p)))
		list = append(list, p...)
	}
	return rawALPNExt(list)
}

func rawALPNExt(list []byte) []byte {
	data := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
	data = append(data, list...)
	ext := []byte{0, 0x10}
	ext = binary.BigEndian.AppendUint16(ext, uint16(len(data)))
	return append(ext, data...)
}

func TestParseHelloALPN(t *testing.T) {
	sni := sniExt(hostEntry(0, "app.example"))
	many := make([]string, MaxALPNProtocols)
	for i := range many {
		many[i] = fmt.Sprint("p", i)
	}
	cases := []struct {
		name string
		exts []byte
		want []string
		err  error
	}{
		{"none", sni, nil, nil},
		{"one", append(alpnExt("mse-ratls/1"), sni...), []string{"mse-ratls/1"}, nil},
		{"order kept", append(sni, alpnExt("h2", "http/1.1", "mse-ratls/1")...), []string{"h2", "http/1.1", "mse-ratls/1"}, nil},
		{"binary name", append(sni, alpnExt("\x00\xff")...), []string{"\x00\xff"}, nil},
		{"255-byte name", append(sni, alpnExt(strings.Repeat("x", 255))...), []string{strings.Repeat("x", 255)}, nil},
		{"max protocols", append(sni, alpnExt(many...)...), many, nil},
		{"too many protocols", append(sni, alpnExt(append(many, "one-more")...)...), nil, ErrMalformed},
		{"empty list", append(sni, rawALPNExt(nil)...), nil, ErrMalformed},
		{"empty name", append(sni, alpnExt("h2", "")...), nil, ErrMalformed},
		{"truncated name", append(sni, rawALPNExt([]byte{5, 'h', '2'})...), nil, ErrMalformed},
		{"list length short", append(sni, 0, 0x10, 0, 5, 0, 2, 2, 'h', '2'), nil, ErrMalformed},
		{"list length long", append(sni, 0, 0x10, 0, 3, 0, 9, 2), nil, ErrMalformed},
		{"empty extension", append(sni, 0, 0x10, 0, 0), nil, ErrMalformed},
		{"duplicate", append(append(sni, alpnExt("h2")...), alpnExt("h2")...), nil, ErrMalformed},
		// A malformed ALPN refuses the hello even without SNI; a good one without SNI is no_sni.
		{"bad alpn no sni", rawALPNExt(nil), nil, ErrMalformed},
		{"alpn no sni", alpnExt("h2"), nil, ErrNoServerName},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := ParseHello(buildHello(c.exts))
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if err != nil {
				if h.ServerName != "" || h.ALPN != nil {
					t.Fatalf("values returned with an error: %+v", h)
				}
				return
			}
			if h.ServerName != "app.example" || !slices.Equal(h.ALPN, c.want) || (c.want == nil) != (h.ALPN == nil) {
				t.Fatalf("got %+v, want ALPN %q", h, c.want)
			}
		})
	}
}

func TestReadHelloALPNRealClients(t *testing.T) {
	for name, cfg := range map[string]*tls.Config{
		"ratls":      {ServerName: "a.example", NextProtos: []string{"mse-ratls/1"}},
		"browserish": {ServerName: "a.example", NextProtos: []string{"h2", "http/1.1"}},
		"acme":       {ServerName: "a.example", NextProtos: []string{"acme-tls/1"}},
		"none":       {ServerName: "a.example"},
	} {
		t.Run(name, func(t *testing.T) {
			hello := captureClientHello(t, cfg)
			for _, in := range [][]byte{hello, fragment(t, hello, 100)} {
				_, h, err := ReadHello(bytes.NewReader(in))
				if err != nil || h.ServerName != "a.example" || !slices.Equal(h.ALPN, cfg.NextProtos) {
					t.Fatalf("ReadHello = %+v, %v; want ALPN %q", h, err, cfg.NextProtos)
				}
				for _, p := range cfg.NextProtos {
					if !h.Offers(p) {
						t.Fatalf("Offers(%q) = false", p)
					}
				}
				if h.Offers("mse-ratls/1") != (name == "ratls") {
					t.Fatalf("Offers(mse-ratls/1) = %v", h.Offers("mse-ratls/1"))
				}
			}
		})
	}
}
