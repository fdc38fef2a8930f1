package s3

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// ParseURL reads the --blobs form of a bucket:
//
//	s3://BUCKET[/PREFIX][?endpoint=HOST:PORT][&region=REGION][&tls=false]
//
// endpoint defaults to DefaultEndpoint, region to DefaultRegion, tls to
// true (tls=false talks plain HTTP: for a server on loopback or a private
// network only). A prefix gets a trailing "/". The URL carries no
// credentials (see Credentials): one with a user or password is refused, so
// that a secret never sits in a flag (and in ps, shell history, logs).
func ParseURL(raw string) (Config, error) {
	var cfg Config
	if len(raw) > 2048 {
		return cfg, errors.New("blob/s3: the URL is longer than 2048 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return cfg, fmt.Errorf("blob/s3: %v", err)
	}
	if u.Scheme != "s3" {
		return cfg, fmt.Errorf("blob/s3: %q is not an s3:// URL", u.Redacted())
	}
	if u.User != nil {
		return cfg, errors.New("blob/s3: the URL carries credentials: pass them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in a file (--blobs-credentials)")
	}
	if u.Opaque != "" || u.Fragment != "" {
		return cfg, fmt.Errorf("blob/s3: want s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=REGION, not %q", raw)
	}
	cfg.Bucket = u.Host
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return cfg, fmt.Errorf("blob/s3: bucket %q: %v", cfg.Bucket, err)
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		cfg.Prefix = p + "/"
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return cfg, err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return cfg, fmt.Errorf("blob/s3: query: %v", err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return cfg, fmt.Errorf("blob/s3: %s is given %d times", k, len(v))
		}
		switch val := v[0]; k {
		case "endpoint":
			host, port, err := net.SplitHostPort(val)
			if err != nil || host == "" {
				return cfg, fmt.Errorf("blob/s3: endpoint %q: want HOST:PORT", val)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return cfg, fmt.Errorf("blob/s3: endpoint %q: bad port", val)
			}
			cfg.Endpoint = val
		case "region":
			if val == "" || len(val) > 64 || strings.ContainsFunc(val, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
			}) {
				return cfg, fmt.Errorf("blob/s3: region %q: want lowercase letters, digits and '-'", val)
			}
			cfg.Region = val
		case "tls":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return cfg, fmt.Errorf("blob/s3: tls=%q: want true or false", val)
			}
			cfg.Insecure = !b
		default:
			return cfg, fmt.Errorf("blob/s3: unknown parameter %q (endpoint, region, tls)", k)
		}
	}
	return cfg, nil
}

// Credentials are the S3 credentials: from file (an AWS shared credentials
// file, profile $AWS_PROFILE or "default") when given, else from the
// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally
// AWS_SESSION_TOKEN). It fails, without showing any secret, when they are
// missing.
func Credentials(file string) (*credentials.Credentials, error) {
	var c *credentials.Credentials
	if file != "" {
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("blob/s3: credentials file: %w", err)
		}
		c = credentials.NewFileAWSCredentials(file, "")
	} else {
		c = credentials.NewEnvAWS()
	}
	v, err := c.Get()
	if err != nil {
		return nil, fmt.Errorf("blob/s3: read the credentials: %v", err)
	}
	if v.AccessKeyID == "" || v.SecretAccessKey == "" {
		if file != "" {
			return nil, fmt.Errorf("blob/s3: %s has no aws_access_key_id and aws_secret_access_key in its profile", file)
		}
		return nil, errors.New("blob/s3: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --blobs-credentials FILE")
	}
	return c, nil
}
