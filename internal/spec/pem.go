package spec

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// The owner's certificate and key are checked by these on the owner's side
// (mse.toml) and again, with the same rules, by the node in stage 2.

// MaxChainCertificates bounds a certificate chain.
const MaxChainCertificates = 10

// ParseCertificateChainPEM parses PEM certificates, leaf first, each issued
// by the next one. Only CERTIFICATE blocks are allowed, and nothing after the
// last one. name says what the chain is in errors (e.g. its file).
func ParseCertificateChainPEM(b []byte, name string) ([]*x509.Certificate, error) {
	chain, err := ParseCertificatesPEM(b, name)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, fmt.Errorf("%s: certificate %d (%s) is not issued by certificate %d (%s): order the chain leaf first, then its issuers (%v)",
				name, i+1, chain[i].Subject, i+2, chain[i+1].Subject, err)
		}
	}
	return chain, nil
}

// ParseCertificatesPEM parses PEM certificates (e.g. a set of roots), in any
// order, with the same rules as ParseCertificateChainPEM otherwise.
func ParseCertificatesPEM(b []byte, name string) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := b
	for i := 0; ; i++ {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			if strings.Contains(blk.Type, "PRIVATE KEY") {
				return nil, fmt.Errorf("%s contains a %s; the private key belongs in cloud.ssl.private_key, only certificates here", name, blk.Type)
			}
			return nil, fmt.Errorf("%s: PEM block %d is a %q, not a CERTIFICATE", name, i+1, blk.Type)
		}
		if len(chain) == MaxChainCertificates {
			return nil, fmt.Errorf("%s holds more than %d certificates", name, MaxChainCertificates)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d does not parse: %v", name, i+1, err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s is not a PEM certificate chain (no \"-----BEGIN CERTIFICATE-----\" block)", name)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%s: trailing data after the last PEM block", name)
	}
	return chain, nil
}

// ParsePrivateKeyPEM parses an unencrypted PEM private key (PKCS#8, PKCS#1
// RSA or SEC 1 EC; an EC PARAMETERS block before it, as openssl ecparam
// writes, is skipped).
func ParsePrivateKeyPEM(b []byte) (crypto.Signer, error) {
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, errors.New("not a PEM private key (no PEM block of type PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")
		}
		if _, enc := blk.Headers["Proc-Type"]; enc || blk.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("the private key is encrypted; store it unencrypted (e.g. openssl pkey -in key.pem -out key-plain.pem)")
		}
		var (
			key any
			err error
		)
		switch blk.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(blk.Bytes)
		case "EC PARAMETERS":
			continue // openssl ecparam writes it before the key
		case "CERTIFICATE":
			return nil, errors.New("contains a CERTIFICATE, not a private key; the certificate belongs in cloud.ssl.certificate")
		default:
			return nil, fmt.Errorf("PEM block %q is not a private key", blk.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("the %s does not parse", blk.Type)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}
