package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"sync"
)

// Signatures over collateral (CRLs, TCB info, QE identity, the TCB signing
// certificate) and over PCK CA certificates are the same for every quote
// of a platform model. A verified (key, message, signature) triple is
// remembered so that a verifier with cached collateral checks only what is
// specific to each quote: its own signature, the QE report's and the PCK
// certificate's. Only successes are remembered, keyed by a hash of all
// three inputs, so a hit is exactly as strong as verifying again. Time
// windows are never cached.
type sigCache struct {
	mu sync.Mutex
	m  map[[32]byte]struct{}
}

const sigCacheMax = 4096

var collateralSigs = &sigCache{m: map[[32]byte]struct{}{}}

func sigKey(keyID, msg, sig []byte) [32]byte {
	h := sha256.New()
	var n [8]byte
	for _, b := range [][]byte{keyID, msg, sig} {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// verify checks sig (raw r‖s when !der, ASN.1 when der) over SHA-256(msg)
// with the P-256 key of keyID (its DER SubjectPublicKeyInfo), remembering
// successes.
func (c *sigCache) verify(pub *ecdsa.PublicKey, keyID, msg, sig []byte, der bool) bool {
	k := sigKey(keyID, msg, sig)
	c.mu.Lock()
	_, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return true
	}
	var good bool
	if der {
		h := sha256.Sum256(msg)
		good = pub.Curve == elliptic.P256() && ecdsa.VerifyASN1(pub, h[:], sig)
	} else {
		good = ecdsaVerify(pub, msg, sig)
	}
	if good {
		c.mu.Lock()
		if len(c.m) >= sigCacheMax {
			clear(c.m)
		}
		c.m[k] = struct{}{}
		c.mu.Unlock()
	}
	return good
}

// checkSignedBy checks that parent (a CA certificate with the given key
// usage) signed tbs with ECDSA-SHA256, using the cache. It replaces
// x509's CheckSignatureFrom for collateral and CA certificates; the PCK
// leaf is always checked without the cache.
func checkSignedBy(parent *x509.Certificate, usage x509.KeyUsage, alg x509.SignatureAlgorithm, tbs, sig []byte) error {
	if !parent.BasicConstraintsValid || !parent.IsCA {
		return fmt.Errorf("%q is not a CA certificate", parent.Subject.CommonName)
	}
	if parent.KeyUsage != 0 && parent.KeyUsage&usage == 0 {
		return fmt.Errorf("%q may not sign this (key usage)", parent.Subject.CommonName)
	}
	if alg != x509.ECDSAWithSHA256 {
		return fmt.Errorf("signature algorithm %s is not ECDSA with SHA-256", alg)
	}
	pub, ok := parent.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fmt.Errorf("%q does not have an ECDSA P-256 key", parent.Subject.CommonName)
	}
	if !collateralSigs.verify(pub, parent.RawSubjectPublicKeyInfo, tbs, sig, true) {
		return fmt.Errorf("ECDSA signature does not verify with the key of %q", parent.Subject.CommonName)
	}
	return nil
}

func certSignedBy(c, parent *x509.Certificate) error {
	return checkSignedBy(parent, x509.KeyUsageCertSign, c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
}

func crlSignedBy(crl *x509.RevocationList, parent *x509.Certificate) error {
	return checkSignedBy(parent, x509.KeyUsageCRLSign, crl.SignatureAlgorithm, crl.RawTBSRevocationList, crl.Signature)
}
