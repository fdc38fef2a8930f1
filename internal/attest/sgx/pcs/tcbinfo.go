package pcs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
)

// TCB status names as Intel writes them in TCB info and QE identity. They
// are the platform's own (attest.TCB*): a verified status reaches the
// owner's policy unchanged.
const (
	StatusUpToDate                          = attest.TCBUpToDate
	StatusSWHardeningNeeded                 = attest.TCBSWHardeningNeeded
	StatusConfigurationNeeded               = attest.TCBConfigurationNeeded
	StatusConfigurationAndSWHardeningNeeded = attest.TCBConfigurationAndSWHardeningNeeded
	StatusOutOfDate                         = attest.TCBOutOfDate
	StatusOutOfDateConfigurationNeeded      = attest.TCBOutOfDateConfigurationNeeded
	StatusRevoked                           = attest.TCBRevoked
)

var platformStatuses = []string{StatusUpToDate, StatusSWHardeningNeeded, StatusConfigurationNeeded,
	StatusConfigurationAndSWHardeningNeeded, StatusOutOfDate, StatusOutOfDateConfigurationNeeded, StatusRevoked}

// Bounds on untrusted collateral.
const (
	MaxTCBInfoSize    = 256 << 10
	MaxIdentitySize   = 64 << 10
	MaxCRLSize        = 1 << 20
	MaxBundleSize     = 4 << 20
	maxTCBLevels      = 512
	maxAdvisoriesEach = 256
)

// TCB info ids (version 3).
const (
	TCBInfoSGX = "SGX"
	TCBInfoTDX = "TDX"
)

// TCBInfo is Intel's TCB info for one platform model (FMSPC), version 2 or 3.
// TDX TCB info (version 3, id "TDX") also describes the TDX module: the
// identity every module must have (TDXModule) and, per module major version,
// its identity and TCB levels (TDXModuleIdentities).
type TCBInfo struct {
	ID                      string     `json:"id"` // "SGX" or "TDX" (version 3); empty in version 2
	Version                 int        `json:"version"`
	IssueDate               time.Time  `json:"issueDate"`
	NextUpdate              time.Time  `json:"nextUpdate"`
	FMSPC                   string     `json:"fmspc"`
	PCEID                   string     `json:"pceId"`
	TCBType                 int        `json:"tcbType"`
	TCBEvaluationDataNumber int        `json:"tcbEvaluationDataNumber"`
	TCBLevels               []TCBLevel `json:"tcbLevels"`

	TDXModule           *TDXModule          `json:"tdxModule,omitempty"`
	TDXModuleIdentities []TDXModuleIdentity `json:"tdxModuleIdentities,omitempty"`
}

// TDXModule is the identity a TDX module must have: MRSIGNERSEAM and the
// SEAM attributes under a mask.
type TDXModule struct {
	MRSignerHex       string `json:"mrsigner"`
	AttributesHex     string `json:"attributes"`
	AttributesMaskHex string `json:"attributesMask"`

	// Decoded by ParseTCBInfo.
	MRSigner       [48]byte `json:"-"`
	Attributes     [8]byte  `json:"-"`
	AttributesMask [8]byte  `json:"-"`
}

// TDXModuleIdentity is the identity and TCB levels of the TDX modules of one
// major version: ID is "TDX_" and the version in two hex digits (TEE_TCB_SVN[1]).
type TDXModuleIdentity struct {
	ID string `json:"id"`
	TDXModule
	TCBLevels []EnclaveTCBLevel `json:"tcbLevels"`
}

func (m *TDXModule) decode(what string) error {
	for _, d := range []struct {
		s    string
		dst  []byte
		name string
	}{
		{m.MRSignerHex, m.MRSigner[:], "mrsigner"},
		{m.AttributesHex, m.Attributes[:], "attributes"},
		{m.AttributesMaskHex, m.AttributesMask[:], "attributesMask"},
	} {
		b, err := hexBytes(d.s, len(d.dst), what+" "+d.name)
		if err != nil {
			return err
		}
		copy(d.dst, b)
	}
	return nil
}

// TCBLevel is one TCB level of a platform, newest first in TCBInfo.
type TCBLevel struct {
	TCB         TCB       `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}

// TCB is the SVNs a TCB level requires.
type TCB struct {
	CompSVN [16]byte
	PCESVN  uint16
	// TDXCompSVN are the 16 TDX TCB component SVNs (TDX TCB info only,
	// compared with the quote's TEE_TCB_SVN); HasTDX says they are present.
	TDXCompSVN [16]byte
	HasTDX     bool
	// CompTypes and TDXCompTypes name the components where the TCB info
	// does ("SEAMLDR ACM", "TDX Module"), for messages; often empty.
	CompTypes, TDXCompTypes [16]string
}

// UnmarshalJSON reads both layouts: version 3 ("sgxtcbcomponents": [{"svn":
// n}, ...] and "pcesvn") and version 2 ("sgxtcbcomp01svn" ... "sgxtcbcomp16svn").
func (t *TCB) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("tcb is not an object")
	}
	pce, ok := m["pcesvn"]
	if !ok {
		return fmt.Errorf("tcb has no pcesvn")
	}
	var p int
	if err := json.Unmarshal(pce, &p); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("tcb pcesvn is not 0..65535")
	}
	t.PCESVN = uint16(p)
	if comps, ok := m["tdxtcbcomponents"]; ok {
		if err := components(comps, "tdxtcbcomponents", &t.TDXCompSVN, &t.TDXCompTypes); err != nil {
			return err
		}
		t.HasTDX = true
	}
	if comps, ok := m["sgxtcbcomponents"]; ok {
		return components(comps, "sgxtcbcomponents", &t.CompSVN, &t.CompTypes)
	}
	if t.HasTDX {
		return fmt.Errorf("tcb has tdxtcbcomponents but no sgxtcbcomponents")
	}
	for i := range 16 {
		v, ok := m[fmt.Sprintf("sgxtcbcomp%02dsvn", i+1)]
		if !ok {
			return fmt.Errorf("tcb has neither sgxtcbcomponents nor sgxtcbcomp%02dsvn", i+1)
		}
		var n int
		if err := json.Unmarshal(v, &n); err != nil || n < 0 || n > 255 {
			return fmt.Errorf("tcb sgxtcbcomp%02dsvn is not 0..255", i+1)
		}
		t.CompSVN[i] = byte(n)
	}
	return nil
}

func components(raw json.RawMessage, name string, dst *[16]byte, types *[16]string) error {
	var cs []struct {
		SVN  *int   `json:"svn"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &cs); err != nil || len(cs) != 16 {
		return fmt.Errorf("tcb %s is not 16 components", name)
	}
	for i, c := range cs {
		if c.SVN == nil || *c.SVN < 0 || *c.SVN > 255 {
			return fmt.Errorf("tcb %s[%d].svn is not 0..255", name, i)
		}
		dst[i] = byte(*c.SVN)
		if len(c.Type) <= 64 {
			types[i] = c.Type
		}
	}
	return nil
}

var advisoryRE = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,63}$`)

// ParseTCBInfo parses the tcbInfo object (the signed bytes). It checks
// shapes, not meaning: package verify checks id, version, FMSPC and dates.
func ParseTCBInfo(raw []byte) (*TCBInfo, error) {
	if len(raw) > MaxTCBInfoSize {
		return nil, fmt.Errorf("TCB info is %d bytes, more than %d", len(raw), MaxTCBInfoSize)
	}
	var t TCBInfo
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("TCB info is not valid JSON: %v", err)
	}
	if len(t.TCBLevels) == 0 || len(t.TCBLevels) > maxTCBLevels {
		return nil, fmt.Errorf("TCB info has %d TCB levels (want 1..%d)", len(t.TCBLevels), maxTCBLevels)
	}
	for i, l := range t.TCBLevels {
		if !slices.Contains(platformStatuses, l.TCBStatus) {
			return nil, fmt.Errorf("TCB info level %d has unknown tcbStatus %q", i, l.TCBStatus)
		}
		if err := checkAdvisories(l.AdvisoryIDs); err != nil {
			return nil, fmt.Errorf("TCB info level %d: %v", i, err)
		}
		if t.ID == TCBInfoTDX && !l.TCB.HasTDX {
			return nil, fmt.Errorf("TDX TCB info level %d has no tdxtcbcomponents", i)
		}
	}
	if t.TDXModule != nil {
		if err := t.TDXModule.decode("TCB info tdxModule"); err != nil {
			return nil, err
		}
	}
	if len(t.TDXModuleIdentities) > maxTCBLevels {
		return nil, fmt.Errorf("TCB info has %d TDX module identities, more than %d", len(t.TDXModuleIdentities), maxTCBLevels)
	}
	for i := range t.TDXModuleIdentities {
		m := &t.TDXModuleIdentities[i]
		if err := m.decode(fmt.Sprintf("TCB info tdxModuleIdentities[%d]", i)); err != nil {
			return nil, err
		}
		if len(m.TCBLevels) == 0 || len(m.TCBLevels) > maxTCBLevels {
			return nil, fmt.Errorf("TDX module identity %q has %d TCB levels (want 1..%d)", m.ID, len(m.TCBLevels), maxTCBLevels)
		}
		if err := checkEnclaveLevels(m.TCBLevels, "TDX module identity "+m.ID); err != nil {
			return nil, err
		}
	}
	return &t, nil
}

func checkAdvisories(ids []string) error {
	if len(ids) > maxAdvisoriesEach {
		return fmt.Errorf("%d advisory IDs, more than %d", len(ids), maxAdvisoriesEach)
	}
	for _, a := range ids {
		if !advisoryRE.MatchString(a) {
			return fmt.Errorf("malformed advisory ID %q", a)
		}
	}
	return nil
}

// EnclaveIdentity is Intel's identity of the quoting enclave (QE identity),
// version 2.
type EnclaveIdentity struct {
	ID                      string            `json:"id"` // "QE" for SGX
	Version                 int               `json:"version"`
	IssueDate               time.Time         `json:"issueDate"`
	NextUpdate              time.Time         `json:"nextUpdate"`
	TCBEvaluationDataNumber int               `json:"tcbEvaluationDataNumber"`
	MiscSelectHex           string            `json:"miscselect"`
	MiscSelectMaskHex       string            `json:"miscselectMask"`
	AttributesHex           string            `json:"attributes"`
	AttributesMaskHex       string            `json:"attributesMask"`
	MRSignerHex             string            `json:"mrsigner"`
	ISVProdID               int               `json:"isvprodid"`
	TCBLevels               []EnclaveTCBLevel `json:"tcbLevels"`

	// Decoded from the hex fields by ParseEnclaveIdentity.
	MiscSelect, MiscSelectMask [4]byte  `json:"-"`
	Attributes, AttributesMask [16]byte `json:"-"`
	MRSigner                   [32]byte `json:"-"`
}

// EnclaveTCBLevel is one TCB level of the QE.
type EnclaveTCBLevel struct {
	TCB struct {
		ISVSVN int `json:"isvsvn"`
	} `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}

// ParseEnclaveIdentity parses the enclaveIdentity object (the signed bytes).
func ParseEnclaveIdentity(raw []byte) (*EnclaveIdentity, error) {
	if len(raw) > MaxIdentitySize {
		return nil, fmt.Errorf("QE identity is %d bytes, more than %d", len(raw), MaxIdentitySize)
	}
	var e EnclaveIdentity
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("QE identity is not valid JSON: %v", err)
	}
	dec := []struct {
		s    string
		dst  []byte
		name string
	}{
		{e.MiscSelectHex, e.MiscSelect[:], "miscselect"},
		{e.MiscSelectMaskHex, e.MiscSelectMask[:], "miscselectMask"},
		{e.AttributesHex, e.Attributes[:], "attributes"},
		{e.AttributesMaskHex, e.AttributesMask[:], "attributesMask"},
		{e.MRSignerHex, e.MRSigner[:], "mrsigner"},
	}
	for _, d := range dec {
		b, err := hexBytes(d.s, len(d.dst), "QE identity "+d.name)
		if err != nil {
			return nil, err
		}
		copy(d.dst, b)
	}
	if e.ISVProdID < 0 || e.ISVProdID > 65535 {
		return nil, fmt.Errorf("QE identity isvprodid %d is not 0..65535", e.ISVProdID)
	}
	if len(e.TCBLevels) == 0 || len(e.TCBLevels) > maxTCBLevels {
		return nil, fmt.Errorf("QE identity has %d TCB levels (want 1..%d)", len(e.TCBLevels), maxTCBLevels)
	}
	if err := checkEnclaveLevels(e.TCBLevels, "QE identity"); err != nil {
		return nil, err
	}
	return &e, nil
}

func checkEnclaveLevels(levels []EnclaveTCBLevel, what string) error {
	for i, l := range levels {
		if l.TCB.ISVSVN < 0 || l.TCB.ISVSVN > 65535 {
			return fmt.Errorf("%s level %d isvsvn is not 0..65535", what, i)
		}
		switch l.TCBStatus {
		case StatusUpToDate, StatusOutOfDate, StatusRevoked, StatusSWHardeningNeeded:
		default:
			return fmt.Errorf("%s level %d has unknown tcbStatus %q", what, i, l.TCBStatus)
		}
		if err := checkAdvisories(l.AdvisoryIDs); err != nil {
			return fmt.Errorf("%s level %d: %v", what, i, err)
		}
	}
	return nil
}

// SignedBody splits a PCS response {"tcbInfo"|"enclaveIdentity": {...},
// "signature": "hex"} into the exact bytes of the signed object and the
// signature. The signature covers the object's bytes as served, so they are
// kept verbatim, never re-encoded.
func SignedBody(body []byte, key string) (raw []byte, sig []byte, err error) {
	var m map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(&m); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %v", err)
	}
	raw, ok := m[key]
	if !ok {
		return nil, nil, fmt.Errorf("no %q member", key)
	}
	var sigHex string
	if err := json.Unmarshal(m["signature"], &sigHex); err != nil {
		return nil, nil, fmt.Errorf("no \"signature\" string")
	}
	sig, err = hexBytes(sigHex, 64, "signature")
	if err != nil {
		return nil, nil, err
	}
	return bytes.TrimSpace(raw), sig, nil
}
