package router

import (
	"bytes"
	"slices"
	"testing"
	"testing/iotest"
)

func addHelloSeeds(f *testing.F) {
	for _, cfg := range helloConfigs() {
		h := captureClientHello(f, cfg)
		f.Add(h)
		f.Add(fragment(f, h, 64))
		f.Add(h[:len(h)/2])
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(buildHello(sniExt(hostEntry(0, "a.b"), hostEntry(7, "x"))))
	f.Add(buildHello(append(sniExt(hostEntry(0, "a.b")), alpnExt("mse-ratls/1", "h2")...)))
	f.Add(buildHello(append(alpnExt("acme-tls/1"), sniExt(hostEntry(0, "a.b"))...)))
	f.Add(buildHello(append(sniExt(hostEntry(0, "a.b")), rawALPNExt([]byte{3, 'h', '2'})...)))
}

// checkALPN: what ParseHello returns is within the bounds it promises.
func checkALPN(t *testing.T, h Hello) {
	if len(h.ALPN) > MaxALPNProtocols {
		t.Fatalf("%d ALPN protocols", len(h.ALPN))
	}
	for _, p := range h.ALPN {
		if len(p) == 0 { // its length byte bounds it to 255
			t.Fatalf("an empty ALPN protocol")
		}
	}
}

func FuzzParseHello(f *testing.F) {
	addHelloSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseHello(in)
		if err != nil {
			if h.ServerName != "" || h.ALPN != nil {
				t.Fatal("values returned with an error")
			}
			return
		}
		checkName(t, h.ServerName)
		checkALPN(t, h)
		// The streaming reader agrees, byte by byte.
		raw, h2, err := ReadHello(iotest.OneByteReader(bytes.NewReader(in)))
		if err != nil || h2.ServerName != h.ServerName || !slices.Equal(h2.ALPN, h.ALPN) || !bytes.Equal(raw, in) {
			t.Fatalf("ReadHello = %+v, %v; ParseHello = %+v", h2, err, h)
		}
	})
}

func checkName(t *testing.T, name string) {
	if n, err := normalizeHostName([]byte(name)); err != nil || n != name {
		t.Fatalf("returned name %q is not normalized: %q, %v", name, n, err)
	}
}

func FuzzReadHello(f *testing.F) {
	addHelloSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, h, err := ReadHello(iotest.OneByteReader(bytes.NewReader(in)))
		name := h.ServerName
		if len(raw) > MaxClientHelloBytes {
			t.Fatalf("read %d bytes", len(raw))
		}
		if !bytes.HasPrefix(in, raw) {
			t.Fatal("raw is not exactly the bytes read")
		}
		if err != nil {
			if name != "" {
				t.Fatal("name returned with an error")
			}
			return
		}
		checkName(t, name)
		if h2, err := ParseHello(raw); err != nil || h2.ServerName != name {
			t.Fatalf("ParseHello(raw) = %q, %v; want %q", h2.ServerName, err, name)
		}
	})
}
