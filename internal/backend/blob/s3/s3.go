// Package s3 stores blobs as objects in an S3 bucket (AWS S3, MinIO,
// versitygw, Ceph RGW…), under a key prefix, with minio-go.
//
// Put streams: content up to one part is held in memory and sent in one
// PutObject; larger content goes up as a multipart upload, one part
// buffered while the previous one is sent (two parts of memory per upload,
// never the whole blob). The SHA-256 and the size are computed on the way
// and checked before the object becomes visible: a multipart upload is
// completed only when the content is whole, within its limit and (for
// PutVerified) of the expected digest, and aborted otherwise, so a failed
// Put leaves nothing under its key (an object already there stays as it
// was). An upload that could not even be aborted (the server went away, the
// backend crashed) stays an incomplete multipart upload, invisible to Open
// and List: Sweep aborts those older than Config.SweepAge.
package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/mse-in-go/mse/internal/backend/blob"
)

// S3's limits on multipart uploads.
const (
	MinPartSize   = 5 << 20
	MaxPartSize   = 5 << 30
	maxParts      = 10000
	maxObjectSize = 5 << 40
)

// Defaults.
const (
	DefaultPartSize = 16 << 20
	// DefaultSweepAge is older than any upload can last: the API lets a
	// 2 GiB bundle take 9 hours at its slowest accepted rate. Other backend
	// replicas may have uploads under way in the same bucket, so Sweep
	// cannot take every incomplete upload for a leftover.
	DefaultSweepAge = 24 * time.Hour
	DefaultRegion   = "us-east-1"
	DefaultEndpoint = "s3.amazonaws.com"
)

// Config says where the blobs are.
type Config struct {
	// Endpoint is the server's host:port (default DefaultEndpoint).
	Endpoint string
	// Insecure talks plain HTTP to Endpoint (default HTTPS).
	Insecure bool
	// Region is the bucket's region (default DefaultRegion); it is needed to
	// sign requests, so no request asks the server for it.
	Region string
	Bucket string
	// Prefix is prepended to every key ("" or ending in "/").
	Prefix string
	// Creds are the credentials (see Credentials).
	Creds *credentials.Credentials
	// PartSize is the multipart part size (default DefaultPartSize, at
	// least MinPartSize); a Put whose limit needs more than 10,000 parts
	// uses larger ones.
	PartSize int64
	// SweepAge is how old an incomplete upload must be for Sweep to abort it
	// (default DefaultSweepAge; tests use less).
	SweepAge time.Duration
	// MaxRetries bounds minio-go's retries of a failed request (default
	// minio-go's, 10).
	MaxRetries int
	// Transport is the HTTP transport (default minio-go's).
	Transport http.RoundTripper
}

// Store keeps blobs in a bucket.
type Store struct {
	cfg    Config
	client *minio.Client
	core   minio.Core
	where  string // s3://bucket/prefix at endpoint, for messages
	bufs   sync.Pool

	mu       sync.Mutex
	inFlight map[string]bool // upload ids of this process's multipart uploads under way
}

// New connects to the bucket; it fails if the bucket does not exist or the
// credentials are refused.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize || cfg.PartSize > MaxPartSize {
		return nil, fmt.Errorf("blob/s3: part size %d is outside S3's %d to %d bytes", cfg.PartSize, MinPartSize, MaxPartSize)
	}
	if cfg.SweepAge == 0 {
		cfg.SweepAge = DefaultSweepAge
	}
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("blob/s3: bucket %q: %v", cfg.Bucket, err)
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Creds == nil {
		return nil, errors.New("blob/s3: no credentials")
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds: cfg.Creds, Secure: !cfg.Insecure, Region: cfg.Region, Transport: cfg.Transport, MaxRetries: cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("blob/s3: endpoint %q: %w", cfg.Endpoint, err)
	}
	scheme := "https"
	if cfg.Insecure {
		scheme = "http"
	}
	s := &Store{
		cfg: cfg, client: client, core: minio.Core{Client: client},
		where: fmt.Sprintf("s3://%s/%s at %s://%s", cfg.Bucket, cfg.Prefix, scheme, cfg.Endpoint),
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, s.fail("reach the bucket", err)
	}
	if !ok {
		return nil, fmt.Errorf("blob/s3: bucket %q does not exist at %s://%s: create it, or name another in --blobs", cfg.Bucket, scheme, cfg.Endpoint)
	}
	return s, nil
}

// checkPrefix accepts "" or a relative path of safe segments ending in "/".
func checkPrefix(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > 512 || !strings.HasSuffix(p, "/") || strings.HasPrefix(p, "/") {
		return fmt.Errorf("blob/s3: prefix %q: want at most 512 bytes, not starting with / and ending with /", p)
	}
	for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("blob/s3: prefix %q has an empty, . or .. segment", p)
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("blob/s3: prefix %q: only letters, digits, '.', '_', '-' and '/'", p)
			}
		}
	}
	return nil
}

// Where says where the blobs are (no credentials).
func (s *Store) Where() string { return s.where }

// Server is the host and TCP port of the server (Config.Endpoint's; the
// port 443 by default, or 80 when Insecure): where nodes fetching
// presigned URLs connect.
func (s *Store) Server() (host string, port int32) {
	host, p, err := net.SplitHostPort(s.cfg.Endpoint)
	if err != nil {
		host = s.cfg.Endpoint
	}
	if n, err := strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
		return host, int32(n)
	}
	if s.cfg.Insecure {
		return host, 80
	}
	return host, 443
}

func (s *Store) object(key string) (string, error) {
	if err := blob.CheckKey(key); err != nil {
		return "", err
	}
	return s.cfg.Prefix + key, nil
}

// partSize is the part size for a Put limited to maxSize bytes: enough
// that maxParts parts hold it.
func (s *Store) partSize(maxSize int64) int64 {
	ps := s.cfg.PartSize
	if maxSize > maxObjectSize {
		maxSize = maxObjectSize
	}
	if need := (maxSize + maxParts) / maxParts; need > ps {
		ps = (need + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return ps
}

func (s *Store) getBuf(size int64) []byte {
	if size == s.cfg.PartSize {
		if b, ok := s.bufs.Get().(*[]byte); ok {
			return *b
		}
	}
	return make([]byte, size)
}

func (s *Store) putBuf(b []byte) {
	if int64(cap(b)) == s.cfg.PartSize {
		b = b[:cap(b)]
		s.bufs.Put(&b)
	}
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, maxSize int64) (blob.Info, error) {
	return s.put(ctx, key, r, maxSize, nil)
}

// PutVerified implements blob.Verifier: content whose SHA-256 is not want
// never becomes visible.
func (s *Store) PutVerified(ctx context.Context, key string, r io.Reader, maxSize int64, want [32]byte) (blob.Info, error) {
	return s.put(ctx, key, r, maxSize, &want)
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, maxSize int64, want *[32]byte) (blob.Info, error) {
	name, err := s.object(key)
	if err != nil {
		return blob.Info{}, err
	}
	if maxSize < 0 {
		maxSize = 0
	}
	src := io.LimitReader(blob.ContextReader(ctx, r), maxSize+1)
	h := sha256.New()
	ps := s.partSize(maxSize)
	buf := s.getBuf(ps)
	n, err := io.ReadFull(src, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		s.putBuf(buf)
		return blob.Info{}, fmt.Errorf("blob/s3: read the content: %w", err)
	}
	if err != nil {
		// All of it fits in one part: one PutObject, atomic by itself.
		defer s.putBuf(buf)
		body := buf[:n]
		h.Write(body)
		info, err := s.check(int64(n), maxSize, h, want)
		if err != nil {
			return blob.Info{}, err
		}
		if _, err := s.core.PutObject(ctx, s.cfg.Bucket, name, bytes.NewReader(body), int64(n), "", hex.EncodeToString(info.SHA256[:]), minio.PutObjectOptions{}); err != nil {
			return blob.Info{}, s.fail("store the blob", err)
		}
		return info, nil
	}
	return s.putMultipart(ctx, name, src, buf, maxSize, h, want)
}

// check is the end of an upload: the size within the limit, the digest the
// expected one.
func (s *Store) check(n, maxSize int64, h hash.Hash, want *[32]byte) (blob.Info, error) {
	if n > maxSize {
		return blob.Info{}, blob.ErrTooLarge
	}
	info := blob.Info{Size: n}
	copy(info.SHA256[:], h.Sum(nil))
	if want != nil && info.SHA256 != *want {
		return blob.Info{}, &blob.DigestError{Want: *want, Got: info.SHA256}
	}
	return info, nil
}

type part struct {
	num int
	buf []byte
	n   int
}

func (s *Store) putMultipart(ctx context.Context, name string, src io.Reader, first []byte, maxSize int64, h hash.Hash, want *[32]byte) (info blob.Info, err error) {
	id, err := s.core.NewMultipartUpload(ctx, s.cfg.Bucket, name, minio.PutObjectOptions{})
	if err != nil {
		s.putBuf(first)
		return blob.Info{}, s.fail("start the upload", err)
	}
	s.mu.Lock()
	if s.inFlight == nil {
		s.inFlight = map[string]bool{}
	}
	s.inFlight[id] = true
	s.mu.Unlock()
	defer func() {
		if err != nil {
			err = s.abort(name, id, err)
		}
		s.mu.Lock()
		delete(s.inFlight, id)
		s.mu.Unlock()
	}()

	// The sender uploads parts one at a time while this goroutine reads the
	// next: two buffers in use, at most one waiting.
	upCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	parts := make(chan part, 1)
	free := make(chan []byte, 2)
	var done []minio.CompletePart
	sendErr := make(chan error, 1)
	go func() {
		var failed error
		for p := range parts {
			if failed == nil {
				sum := sha256.Sum256(p.buf[:p.n])
				op, err := s.core.PutObjectPart(upCtx, s.cfg.Bucket, name, id, p.num, bytes.NewReader(p.buf[:p.n]), int64(p.n),
					minio.PutObjectPartOptions{Sha256Hex: hex.EncodeToString(sum[:])})
				if err != nil {
					failed = s.fail(fmt.Sprintf("store part %d", p.num), err)
					cancel()
				} else {
					done = append(done, minio.CompletePart{PartNumber: op.PartNumber, ETag: op.ETag})
				}
			}
			free <- p.buf
		}
		sendErr <- failed
	}()
	// finish stops the sender (at once when the upload failed) and returns
	// its error.
	finish := func(failed bool) error {
		if failed {
			cancel()
		}
		close(parts)
		err := <-sendErr
		for len(free) > 0 {
			s.putBuf(<-free)
		}
		return err
	}
	// failed is the error of an upload that stopped: the sender's (the
	// server's) if it has one, else the cause.
	failed := func(cause error) error {
		err := finish(true)
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return cause
	}

	var total int64
	free <- s.getBuf(int64(len(first)))
	buf, n, last := first, len(first), false
	for num := 1; ; num++ {
		// buf[:n] is part num, n > 0.
		h.Write(buf[:n])
		total += int64(n)
		if total > maxSize || num > maxParts {
			s.putBuf(buf)
			return blob.Info{}, failed(blob.ErrTooLarge)
		}
		select {
		case parts <- part{num: num, buf: buf, n: n}:
		case <-upCtx.Done():
			s.putBuf(buf)
			return blob.Info{}, failed(context.Canceled)
		}
		if last {
			break
		}
		select {
		case buf = <-free:
		case <-upCtx.Done():
			return blob.Info{}, failed(context.Canceled)
		}
		var rerr error
		n, rerr = io.ReadFull(src, buf)
		if rerr == io.EOF {
			s.putBuf(buf)
			break
		}
		if rerr == io.ErrUnexpectedEOF {
			last = true
			continue
		}
		if rerr != nil {
			s.putBuf(buf)
			return blob.Info{}, failed(fmt.Errorf("blob/s3: read the content: %w", rerr))
		}
	}
	if err := finish(false); err != nil {
		return blob.Info{}, err
	}
	info, err = s.check(total, maxSize, h, want)
	if err != nil {
		return blob.Info{}, err
	}
	if _, err := s.core.CompleteMultipartUpload(ctx, s.cfg.Bucket, name, id, done, minio.PutObjectOptions{}); err != nil {
		return blob.Info{}, s.fail("complete the upload", err)
	}
	return info, nil
}

// abort ends a failed multipart upload (even if the caller's context is
// over); when that fails too, Sweep will.
func (s *Store) abort(name, id string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, name, id); err != nil {
		if isCode(err, "NoSuchUpload") {
			return cause
		}
		return fmt.Errorf("%w (the incomplete upload could not be aborted either, so nothing is visible under the key; the backend's sweep aborts it after %v)", cause, s.cfg.SweepAge)
	}
	return cause
}

// Open implements blob.Store.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	rc, _, _, err := s.core.GetObject(ctx, s.cfg.Bucket, name, minio.GetObjectOptions{})
	if err != nil {
		if notFound(err) {
			return nil, blob.ErrNotFound
		}
		return nil, s.fail("open the blob", err)
	}
	return rc, nil
}

// Delete implements blob.Store (a missing blob is no error).
func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.cfg.Bucket, name, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
		return s.fail("delete the blob", err)
	}
	return nil
}

// List implements blob.Store: the keys under the prefix (objects whose
// names are not keys, such as deeper paths, are not listed).
func (s *Store) List(ctx context.Context) ([]string, error) {
	var keys []string
	for o := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, s.fail("list the blobs", o.Err)
		}
		k := strings.TrimPrefix(o.Key, s.cfg.Prefix)
		if blob.CheckKey(k) == nil {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// PresignGet implements blob.Presigner: a URL that GETs exactly the object
// under key, signed with the store's credentials, valid for ttl. The object
// must exist when it is asked for.
func (s *Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (*url.URL, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if ttl < blob.MinPresignTTL || ttl > blob.MaxPresignTTL {
		return nil, fmt.Errorf("blob/s3: a presigned URL lives %v to %v, not %v", blob.MinPresignTTL, blob.MaxPresignTTL, ttl)
	}
	if _, err := s.client.StatObject(ctx, s.cfg.Bucket, name, minio.StatObjectOptions{}); err != nil {
		if notFound(err) {
			return nil, blob.ErrNotFound
		}
		return nil, s.fail("find the blob", err)
	}
	u, err := s.client.PresignedGetObject(ctx, s.cfg.Bucket, name, ttl, nil)
	if err != nil {
		return nil, s.fail("presign", err)
	}
	return u, nil
}

// Sweep implements blob.Sweeper: it aborts the incomplete multipart uploads
// under the prefix that no upload of this process owns and that began more
// than SweepAge ago, and returns how many and the bytes their parts held.
func (s *Store) Sweep(ctx context.Context) (uploads int, bytes int64, err error) {
	cutoff := time.Now().Add(-s.cfg.SweepAge)
	var keyMarker, idMarker string
	for {
		res, err := s.core.ListMultipartUploads(ctx, s.cfg.Bucket, s.cfg.Prefix, keyMarker, idMarker, "", 1000)
		if err != nil {
			return uploads, bytes, s.fail("list incomplete uploads", err)
		}
		for _, u := range res.Uploads {
			s.mu.Lock()
			busy := s.inFlight[u.UploadID]
			s.mu.Unlock()
			if busy || u.Initiated.After(cutoff) {
				continue
			}
			size := s.uploadedBytes(ctx, u.Key, u.UploadID)
			if err := s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, u.Key, u.UploadID); err != nil && !isCode(err, "NoSuchUpload") {
				return uploads, bytes, s.fail("abort an incomplete upload", err)
			}
			uploads++
			bytes += size
		}
		if !res.IsTruncated || (res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker) {
			return uploads, bytes, nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// uploadedBytes is what an incomplete upload's parts hold (0 if unknown).
func (s *Store) uploadedBytes(ctx context.Context, name, id string) int64 {
	var total int64
	marker := 0
	for range maxParts/1000 + 1 {
		res, err := s.core.ListObjectParts(ctx, s.cfg.Bucket, name, id, marker, 1000)
		if err != nil {
			return total
		}
		for _, p := range res.ObjectParts {
			total += p.Size
		}
		if !res.IsTruncated || res.NextPartNumberMarker <= marker {
			break
		}
		marker = res.NextPartNumberMarker
	}
	return total
}

func isCode(err error, codes ...string) bool {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return false
	}
	for _, c := range codes {
		if resp.Code == c {
			return true
		}
	}
	return false
}

func notFound(err error) bool { return isCode(err, "NoSuchKey", "NotFound") }

// fail turns a failure of op into an error that says what to do. It never
// carries credentials (minio-go's errors do not).
func (s *Store) fail(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case "XMinioStorageFull", "XAmzStorageFull":
			return &blob.FullError{Path: s.where, Free: -1, Err: err}
		case "NoSuchBucket":
			return fmt.Errorf("blob/s3: %s: the bucket is gone from %s: create it again, or name another in --blobs: %w", op, s.where, err)
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken":
			return fmt.Errorf("blob/s3: %s: %s refused the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or --blobs-credentials) and the key's rights on the bucket: %w", op, s.where, err)
		}
		if resp.StatusCode >= 500 {
			return fmt.Errorf("blob/s3: %s: the S3 server %s failed (%d): retry later; if it persists, check the server: %w", op, s.where, resp.StatusCode, err)
		}
		return fmt.Errorf("blob/s3: %s at %s: %w", op, s.where, err)
	}
	var nerr net.Error
	if errors.As(err, &nerr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("blob/s3: %s: the S3 server %s is unreachable or dropped the connection: check that it runs and that the backend reaches it, then retry: %w", op, s.where, err)
	}
	return fmt.Errorf("blob/s3: %s at %s: %w", op, s.where, err)
}
