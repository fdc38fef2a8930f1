package bundle

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/tink-crypto/tink-go/v2/streamingaead/subtle"
)

// Format constants; docs/bundle-format.md is the normative description.
const (
	magic         = "MSEBNDL"
	formatVersion = 1
	headerSize    = len(magic) + 1 + 4 // magic, version, segment size

	// DefaultSegmentSize is the ciphertext segment size Encrypt uses: 1 MiB
	// keeps the per-segment overhead (16-byte tag) at 0.0015% and the memory of
	// a reader or writer at about two segments.
	DefaultSegmentSize = 1 << 20
	// MinSegmentSize and MaxSegmentSize bound the segment size a reader
	// accepts, so that a header cannot make it allocate much memory.
	MinSegmentSize = 4 << 10
	MaxSegmentSize = 8 << 20

	hkdfHash    = "SHA256"
	derivedSize = 32 // AES-256 segment keys

	tinkHeaderSize = 1 + derivedSize + subtle.AESGCMHKDFNoncePrefixSizeInBytes // 40
	tagSize        = subtle.AESGCMHKDFTagSizeInBytes
)

// Errors that Decrypt's reader (and so Check and Open) return, to be tested
// with errors.Is.
var (
	// ErrNotBundle: the input does not start with a bundle header.
	ErrNotBundle = errors.New("this is not an MSE bundle (it does not start with the MSEBNDL header)")
	// ErrWrongKey: the first segment does not authenticate. With AES-GCM-HKDF
	// a wrong key, a modified header and a modified first segment look the
	// same, and the message says so.
	ErrWrongKey = errors.New("the code key does not decrypt this bundle: wrong key, or the bundle was tampered with")
	// ErrCorrupt: a later segment does not authenticate, or the bundle ends
	// early (truncation), or has bytes appended.
	ErrCorrupt = errors.New("the bundle is truncated or was tampered with")
)

// header returns the bundle header for a segment size. It is also the
// associated data of the Tink stream, which authenticates it.
func header(segmentSize int) []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	h[len(magic)] = formatVersion
	binary.BigEndian.PutUint32(h[len(magic)+1:], uint32(segmentSize))
	return h
}

// parseHeader checks a bundle header and returns its segment size.
func parseHeader(h []byte) (int, error) {
	if len(h) < headerSize || !bytes.Equal(h[:len(magic)], []byte(magic)) {
		return 0, ErrNotBundle
	}
	if v := h[len(magic)]; v != formatVersion {
		return 0, fmt.Errorf("bundle format version %d is not supported (this program reads version %d); use a matching version of mse", v, formatVersion)
	}
	seg := binary.BigEndian.Uint32(h[len(magic)+1:])
	if seg < MinSegmentSize || seg > MaxSegmentSize {
		return 0, fmt.Errorf("bundle header: segment size %d is outside the accepted range [%d, %d]; the bundle is corrupt or was not made by mse", seg, MinSegmentSize, MaxSegmentSize)
	}
	return int(seg), nil
}

func newAEAD(key Key, segmentSize int) (*subtle.AESGCMHKDF, error) {
	if key.IsZero() {
		return nil, errZeroKey
	}
	return subtle.NewAESGCMHKDF(key[:], hkdfHash, derivedSize, segmentSize, headerSize)
}

// Encrypt writes a bundle header to dst and returns a writer that encrypts
// what is written to it. Close must be called to write the last segment; it
// does not close dst. Memory use is about one segment (1 MiB).
func Encrypt(dst io.Writer, key Key) (io.WriteCloser, error) {
	return encrypt(dst, key, DefaultSegmentSize)
}

func encrypt(dst io.Writer, key Key, segmentSize int) (io.WriteCloser, error) {
	if segmentSize < MinSegmentSize || segmentSize > MaxSegmentSize {
		return nil, fmt.Errorf("segment size %d outside [%d, %d]", segmentSize, MinSegmentSize, MaxSegmentSize)
	}
	a, err := newAEAD(key, segmentSize)
	if err != nil {
		return nil, err
	}
	h := header(segmentSize)
	if _, err := dst.Write(h); err != nil {
		return nil, fmt.Errorf("writing the bundle: %w", err)
	}
	w, err := a.NewEncryptingWriter(dst, h)
	if err != nil {
		return nil, fmt.Errorf("writing the bundle: %w", err)
	}
	return w, nil
}

// Decrypt reads and checks the bundle header from src, decrypts the first
// segment (so that a wrong key is reported here, not later), and returns a
// reader of the plaintext.
//
// The reader only returns authenticated plaintext, one segment at a time; it
// returns io.EOF only after the last segment authenticated, so a reader that
// reached io.EOF has seen the whole, unmodified bundle. Errors are sticky and
// wrap ErrWrongKey or ErrCorrupt when authentication fails. Memory use is about
// two segments, whatever the size of the bundle.
func Decrypt(src io.Reader, key Key) (io.Reader, error) {
	h := make([]byte, headerSize)
	if n, err := io.ReadFull(src, h); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if n >= len(magic) && bytes.Equal(h[:len(magic)], []byte(magic)) {
				return nil, fmt.Errorf("%w (it ends inside its header)", ErrCorrupt)
			}
			return nil, ErrNotBundle
		}
		return nil, fmt.Errorf("reading the bundle: %w", err)
	}
	seg, err := parseHeader(h)
	if err != nil {
		return nil, err
	}
	a, err := newAEAD(key, seg)
	if err != nil {
		return nil, err
	}
	rec := &recordingReader{r: src}
	tr, err := a.NewDecryptingReader(rec, h)
	if err != nil {
		if rec.err != nil && rec.err != io.EOF && rec.err != io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("reading the bundle: %w", rec.err)
		}
		if rec.err != nil {
			return nil, fmt.Errorf("%w (it ends inside its header)", ErrCorrupt)
		}
		return nil, fmt.Errorf("%w (bad stream header)", ErrCorrupt)
	}
	d := &decReader{
		r:       tr,
		rec:     rec,
		firstPT: int64(seg - tagSize - tinkHeaderSize - headerSize),
		segPT:   int64(seg - tagSize),
	}
	// Decrypt the first segment now: a wrong key is the error users make, and
	// they should hear about it before anything else happens.
	var b [1]byte
	for {
		n, err := d.Read(b[:])
		if n > 0 {
			d.pending = b[:n:n]
			d.delivered = 0
			break
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// recordingReader remembers the last error of the reader it wraps, to tell
// I/O errors apart from authentication failures in Tink's reader.
type recordingReader struct {
	r   io.Reader
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil {
		r.err = err
	}
	return n, err
}

// decReader wraps Tink's decrypting reader: sticky errors, explained.
type decReader struct {
	r         io.Reader
	rec       *recordingReader
	pending   []byte // the byte read by Decrypt
	delivered int64  // plaintext bytes returned so far
	firstPT   int64  // plaintext bytes in segment 0
	segPT     int64  // plaintext bytes in later segments
	err       error
}

func (d *decReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if len(d.pending) > 0 && len(p) > 0 {
		n := copy(p, d.pending)
		d.pending = d.pending[n:]
		d.delivered += int64(n)
		return n, nil
	}
	n, err := d.r.Read(p)
	d.delivered += int64(n)
	if err != nil {
		d.err = d.explain(err)
		return n, d.err
	}
	return n, nil
}

// explain turns an error of Tink's reader into one that says what happened.
func (d *decReader) explain(err error) error {
	if err == io.EOF {
		return io.EOF
	}
	if d.rec.err != nil && err == d.rec.err && err != io.EOF && err != io.ErrUnexpectedEOF {
		return fmt.Errorf("reading the bundle: %w", err)
	}
	// Anything else from Tink is a segment that does not authenticate
	// (modified, moved, duplicated, missing, or a stream cut short).
	seg := int64(0)
	if d.delivered > 0 {
		seg = 1 + (d.delivered-d.firstPT)/d.segPT
	}
	if seg == 0 {
		return ErrWrongKey
	}
	return fmt.Errorf("%w: segment %d does not authenticate", ErrCorrupt, seg)
}
