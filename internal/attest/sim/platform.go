package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/mse-in-go/mse/internal/atomicfile"
	"github.com/mse-in-go/mse/internal/attest"
)

// Names of the simulated platform's certificates and of its files.
const (
	RootCommonName = "MSE simulated TEE root"
	AKCommonName   = "MSE simulated attestation key"

	RootCertFile = "sim-root.pem"
	RootKeyFile  = "sim-root.key"
	AKCertFile   = "sim-ak.pem"
	AKKeyFile    = "sim-ak.key"

	rootValidity = 10 * 365 * 24 * time.Hour
	akValidity   = 5 * 365 * 24 * time.Hour
	// backdate tolerates clocks slightly behind the platform's.
	backdate = time.Hour
)

// DevSigner is the signer identity the local runner reports for the nodes it
// launches: the SHA-256 of "mse-in-go development signer", that is
// ca3610de707e3b40fec30100615315c042d711fbfc8ac2393f499adbb6173f22. It is a fixed,
// public value, not a key: in simulation nobody signs the runtime.
var DevSigner = sha256.Sum256([]byte("mse-in-go development signer"))

// Platform is a simulated TEE platform: a root CA and an attestation key (AK)
// certified by it. It plays the hardware: only it signs sim quotes. Keep it
// out of the node process (see NewQuotingService).
type Platform struct {
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	ak      *x509.Certificate
	akKey   *ecdsa.PrivateKey
}

// NewPlatformInMemory creates a fresh platform that is not persisted.
func NewPlatformInMemory() (*Platform, error) {
	return newPlatform(time.Now())
}

func newPlatform(now time.Time) (*Platform, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sim: generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: RootCommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(rootValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("sim: create root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sim: parse root certificate: %w", err)
	}
	p := &Platform{root: root, rootKey: rootKey}
	if err := p.issueAK(now); err != nil {
		return nil, err
	}
	return p, nil
}

// issueAK creates a fresh attestation key certified by the root.
func (p *Platform) issueAK(now time.Time) error {
	akKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("sim: generate attestation key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	notAfter := now.Add(akValidity)
	if notAfter.After(p.root.NotAfter) {
		notAfter = p.root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: AKCommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, &akKey.PublicKey, p.rootKey)
	if err != nil {
		return fmt.Errorf("sim: create attestation key certificate: %w", err)
	}
	ak, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("sim: parse attestation key certificate: %w", err)
	}
	p.ak, p.akKey = ak, akKey
	return nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("sim: serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// LoadOrCreatePlatform loads the simulated platform persisted in dir, or
// creates it there (dir is created with mode 0700) when none of its files
// exist: sim-root.pem and sim-ak.pem (certificates), sim-root.key and
// sim-ak.key (PKCS#8 PEM private keys, mode 0600). A partial set of files, a
// corrupt file or keys that do not match their certificates are errors: the
// root may already be pinned by owners, so it is never replaced silently.
// An attestation key certificate that has expired is re-issued from the root
// (the root, and so its fingerprint, stays the same).
func LoadOrCreatePlatform(dir string) (*Platform, error) {
	files := []string{RootCertFile, RootKeyFile, AKCertFile, AKKeyFile}
	var present, missing []string
	for _, f := range files {
		_, err := os.Lstat(filepath.Join(dir, f))
		switch {
		case err == nil:
			present = append(present, f)
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, f)
		default:
			return nil, fmt.Errorf("sim platform: %w", err)
		}
	}
	now := time.Now()
	switch {
	case len(present) == 0:
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sim platform: %w", err)
		}
		p, err := newPlatform(now)
		if err != nil {
			return nil, err
		}
		if err := p.save(dir, true); err != nil {
			return nil, err
		}
		return p, nil
	case len(missing) > 0:
		return nil, fmt.Errorf("sim platform in %s is incomplete: %v present but %v missing; restore the missing files, or remove all of them to create a new platform (whose root has a new fingerprint)", dir, present, missing)
	}
	p, err := load(dir)
	if err != nil {
		return nil, err
	}
	if !now.Before(p.ak.NotAfter) {
		if err := p.issueAK(now); err != nil {
			return nil, err
		}
		if err := p.save(dir, false); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func load(dir string) (*Platform, error) {
	root, err := readCert(dir, RootCertFile)
	if err != nil {
		return nil, err
	}
	rootKey, err := readKey(dir, RootKeyFile)
	if err != nil {
		return nil, err
	}
	ak, err := readCert(dir, AKCertFile)
	if err != nil {
		return nil, err
	}
	akKey, err := readKey(dir, AKKeyFile)
	if err != nil {
		return nil, err
	}
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("sim platform: %s is not a CA certificate", filepath.Join(dir, RootCertFile))
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("sim platform: %s is not self-signed: %w", filepath.Join(dir, RootCertFile), err)
	}
	if !rootKey.PublicKey.Equal(root.PublicKey) {
		return nil, fmt.Errorf("sim platform: %s does not match %s", filepath.Join(dir, RootKeyFile), filepath.Join(dir, RootCertFile))
	}
	if err := ak.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("sim platform: %s is not issued by %s: %w", filepath.Join(dir, AKCertFile), filepath.Join(dir, RootCertFile), err)
	}
	if !akKey.PublicKey.Equal(ak.PublicKey) {
		return nil, fmt.Errorf("sim platform: %s does not match %s", filepath.Join(dir, AKKeyFile), filepath.Join(dir, AKCertFile))
	}
	return &Platform{root: root, rootKey: rootKey, ak: ak, akKey: akKey}, nil
}

func readPEM(dir, name, typ string) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sim platform: %w", err)
	}
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != typ || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("sim platform: %s is corrupt: want exactly one PEM block of type %q", path, typ)
	}
	return blk.Bytes, nil
}

func readCert(dir, name string) (*x509.Certificate, error) {
	der, err := readPEM(dir, name, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sim platform: %s is corrupt: %w", filepath.Join(dir, name), err)
	}
	if !isP256(c) {
		return nil, fmt.Errorf("sim platform: %s does not hold an ECDSA P-256 key", filepath.Join(dir, name))
	}
	return c, nil
}

func readKey(dir, name string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(dir, name, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("sim platform: %s is corrupt: %w", filepath.Join(dir, name), err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("sim platform: %s is not an ECDSA P-256 key", filepath.Join(dir, name))
	}
	return ek, nil
}

func isP256(c *x509.Certificate) bool {
	k, ok := c.PublicKey.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}

// save writes the platform's files (only the attestation key's unless withRoot).
// Each file is written to a temporary file, synced, then renamed into place.
func (p *Platform) save(dir string, withRoot bool) error {
	type file struct {
		name string
		typ  string
		der  []byte
		mode os.FileMode
	}
	var files []file
	if withRoot {
		der, err := x509.MarshalPKCS8PrivateKey(p.rootKey)
		if err != nil {
			return fmt.Errorf("sim platform: %w", err)
		}
		files = append(files, file{RootKeyFile, "PRIVATE KEY", der, 0o600}, file{RootCertFile, "CERTIFICATE", p.root.Raw, 0o644})
	}
	der, err := x509.MarshalPKCS8PrivateKey(p.akKey)
	if err != nil {
		return fmt.Errorf("sim platform: %w", err)
	}
	files = append(files, file{AKKeyFile, "PRIVATE KEY", der, 0o600}, file{AKCertFile, "CERTIFICATE", p.ak.Raw, 0o644})
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(dir, f.name), pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return fmt.Errorf("sim platform: write %s: %w", f.name, err)
		}
	}
	return nil
}

// RootCertificate returns the platform's root certificate, the trust anchor
// of its quotes.
func (p *Platform) RootCertificate() *x509.Certificate { return p.root }

// RootPEM returns the root certificate in PEM, as the operator publishes it.
func (p *Platform) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.root.Raw})
}

// RootFingerprint returns the lowercase hex SHA-256 of the root's DER, the
// value a trust policy pins as simulation.root_sha256.
func (p *Platform) RootFingerprint() string { return fingerprint(p.root) }

// AKCertificate returns the attestation key's certificate.
func (p *Platform) AKCertificate() *x509.Certificate { return p.ak }

// fingerprint returns the lowercase hex SHA-256 of a certificate's DER.
func fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// Identity is what the simulated hardware states about the enclave it runs:
// the runner, playing the hardware, fills it in (Measurement from MeasureFile
// of the executable it launches, Signer usually DevSigner).
type Identity struct {
	Measurement, Signer [32]byte
	ProductID, SVN      uint16
	Debug               bool
	// TCBStatus is one of the attest.TCB* names except "unchecked";
	// empty means attest.TCBUpToDate.
	TCBStatus string
	// RuntimeDigest is the manifest digest of the runtime image the node
	// runs in (zero: none).
	RuntimeDigest [32]byte
}

func (id Identity) tcbStatus() string {
	if id.TCBStatus == "" {
		return attest.TCBUpToDate
	}
	return id.TCBStatus
}

// Validate checks that the identity can be stated in a sim quote.
func (id Identity) Validate() error {
	_, err := tcbCode(id.tcbStatus())
	return err
}

// Quote makes a sim quote stating id and binding reportData, timestamped now,
// signed with the platform's attestation key.
func (p *Platform) Quote(id Identity, reportData [64]byte, now time.Time) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	q := &Quote{
		Measurement:   id.Measurement,
		Signer:        id.Signer,
		ProductID:     id.ProductID,
		SVN:           id.SVN,
		TCBStatus:     id.tcbStatus(),
		ReportData:    reportData,
		RuntimeDigest: id.RuntimeDigest,
		Timestamp:     now.Unix(),
		AKCert:        p.ak.Raw,
	}
	if id.Debug {
		q.Flags |= FlagDebug
	}
	d := q.digest()
	sig, err := ecdsa.SignASN1(rand.Reader, p.akKey, d[:])
	if err != nil {
		return nil, fmt.Errorf("sim: sign quote: %w", err)
	}
	q.Signature = sig
	return q.Marshal()
}

// MeasureFile returns the SHA-256 of a file: the sim measurement of the
// executable at path.
func MeasureFile(path string) ([32]byte, error) {
	var m [32]byte
	f, err := os.Open(path)
	if err != nil {
		return m, fmt.Errorf("sim: measure: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return m, fmt.Errorf("sim: measure %s: %w", path, err)
	}
	copy(m[:], h.Sum(nil))
	return m, nil
}
