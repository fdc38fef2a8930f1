// Package pcstest serves recorded SGX or TDX collateral the way a PCCS (Intel PCS
// API v4) does, from an in-process httptest server, so that tests of PCCS
// clients never leave the machine.
package pcstest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// Server is a fake PCCS.
type Server struct {
	*httptest.Server
	// Hits counts requests.
	Hits atomic.Int64
}

type bundle struct {
	PCKCRLIssuerChain     string `json:"pck_crl_issuer_chain"`
	RootCACRL             string `json:"root_ca_crl"`
	PCKCRL                string `json:"pck_crl"`
	TCBInfoIssuerChain    string `json:"tcb_info_issuer_chain"`
	TCBInfo               string `json:"tcb_info"`
	TCBInfoSignature      string `json:"tcb_info_signature"`
	QEIdentityIssuerChain string `json:"qe_identity_issuer_chain"`
	QEIdentity            string `json:"qe_identity"`
	QEIdentitySignature   string `json:"qe_identity_signature"`
}

// New serves the collateral of an offline bundle file (dcap-qvl layout) for
// the FMSPC of its TCB info and PCK CA ca ("processor" or "platform"). The
// server is closed when the test ends.
func New(t testing.TB, bundlePath, ca string) *Server {
	t.Helper()
	raw, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	var b bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	var info struct {
		FMSPC string `json:"fmspc"`
	}
	if err := json.Unmarshal([]byte(b.TCBInfo), &info); err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	mux := http.NewServeMux()
	// The same bundle answers for SGX and TDX: tests of TDX use a TDX
	// bundle, whose TCB info and QE identity verification checks by id.
	for _, tee := range []string{"sgx", "tdx"} {
		mux.HandleFunc("/"+tee+"/certification/v4/tcb", func(w http.ResponseWriter, r *http.Request) {
			s.Hits.Add(1)
			if !strings.EqualFold(r.URL.Query().Get("fmspc"), info.FMSPC) {
				w.Header().Set("Error-Message", "no TCB info for this FMSPC")
				http.Error(w, "not found", http.StatusNotFound)
				return
			}
			w.Header().Set("TCB-Info-Issuer-Chain", url.PathEscape(b.TCBInfoIssuerChain))
			fmt.Fprintf(w, `{"tcbInfo":%s,"signature":"%s"}`, b.TCBInfo, b.TCBInfoSignature)
		})
		mux.HandleFunc("/"+tee+"/certification/v4/qe/identity", func(w http.ResponseWriter, r *http.Request) {
			s.Hits.Add(1)
			w.Header().Set("SGX-Enclave-Identity-Issuer-Chain", url.PathEscape(b.QEIdentityIssuerChain))
			fmt.Fprintf(w, `{"enclaveIdentity":%s,"signature":"%s"}`, b.QEIdentity, b.QEIdentitySignature)
		})
	}
	mux.HandleFunc("/sgx/certification/v4/pckcrl", func(w http.ResponseWriter, r *http.Request) {
		s.Hits.Add(1)
		if r.URL.Query().Get("ca") != ca {
			w.Header().Set("Error-Message", "no CRL for this CA")
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		der, err := hex.DecodeString(b.PCKCRL)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("SGX-PCK-CRL-Issuer-Chain", url.PathEscape(b.PCKCRLIssuerChain))
		w.Write(der)
	})
	mux.HandleFunc("/sgx/certification/v4/rootcacrl", func(w http.ResponseWriter, r *http.Request) {
		s.Hits.Add(1)
		w.Write([]byte(b.RootCACRL)) // a PCCS serves it as hex
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}
