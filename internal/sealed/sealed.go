// Package sealed encrypts app secrets to one enclave: HPKE (RFC 9180) base
// mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305,
// from the standard library. The recipient key is the X25519 key whose public
// half a node binds into its evidence (claim "mse-sealing-key"), so only that
// attested node can open what was sealed to it. The app id is the HPKE info,
// so a ciphertext for one app does not open in another.
package sealed

import (
	"crypto/ecdh"
	"crypto/hpke"
	"errors"
	"fmt"
)

// MaxSize bounds a sealed message.
const MaxSize = 1 << 20

func info(appID string) []byte { return []byte("mse sealed secrets v1\x00" + appID) }

// Key is an enclave's sealing key pair.
type Key struct{ priv *ecdh.PrivateKey }

// NewKey generates a sealing key pair.
func NewKey() (*Key, error) {
	k, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return &Key{priv: k}, nil
}

// Public returns the 32-byte X25519 public key.
func (k *Key) Public() []byte { return k.priv.PublicKey().Bytes() }

// Seal encrypts plaintext to the enclave public key pub for app appID.
func Seal(pub []byte, appID string, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxSize-64 {
		return nil, fmt.Errorf("sealed: secrets are %d bytes, more than %d", len(plaintext), MaxSize-64)
	}
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("sealed: bad enclave sealing key: %w", err)
	}
	hpk, err := hpke.NewDHKEMPublicKey(pk)
	if err != nil {
		return nil, err
	}
	return hpke.Seal(hpk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info(appID), plaintext)
}

// Open decrypts what Seal produced for this key and app.
func (k *Key) Open(appID string, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) > MaxSize {
		return nil, fmt.Errorf("sealed: ciphertext is %d bytes, more than %d", len(ciphertext), MaxSize)
	}
	hk, err := hpke.NewDHKEMPrivateKey(k.priv)
	if err != nil {
		return nil, err
	}
	pt, err := hpke.Open(hk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info(appID), ciphertext)
	if err != nil {
		return nil, errors.New("sealed secrets do not open with this enclave's key: they were sealed to another node or app, or were altered")
	}
	return pt, nil
}
