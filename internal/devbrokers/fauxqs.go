package devbrokers

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// FauxqsVersion is the fauxqs release scripts/install-test-tools.sh installs; 2.x needs
// Node ≥ 22.5, Debian 12 has Node 20.
const FauxqsVersion = "1.9.2"

// Region is the AWS region of every queue and topic of the emulator.
const Region = "us-east-1"

// ErrNoFauxqs is returned by StartFauxqs when node or the fauxqs package is missing.
var ErrNoFauxqs = errors.New("fauxqs (SQS/SNS emulator) not installed: run scripts/install-test-tools.sh " +
	"(npm install of fauxqs@" + FauxqsVersion + " into ${PUBCRYPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pubcrypt}/node; needs Node.js ≥ 20)")

//go:embed fauxqs.mjs
var fauxqsScript string

// Fauxqs is a running fauxqs server: SQS and SNS on one endpoint, in memory, no
// authentication. Queue URLs are http://127.0.0.1:PORT/000000000000/NAME; gocloud's
// https:// form of them is accepted too.
type Fauxqs struct {
	// Endpoint is the server's address, http://127.0.0.1:PORT.
	Endpoint string
	// Startup is how long node took to load fauxqs and listen.
	Startup time.Duration

	child *child
	stdin io.Closer
	sqs   *sqs.Client
	sns   *sns.Client
}

// StartFauxqs starts fauxqs from the directory scripts/install-test-tools.sh installs it
// to, on a free port of 127.0.0.1. The caller must Stop it.
func StartFauxqs(ctx context.Context) (*Fauxqs, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("devbrokers: node not on PATH: %w", ErrNoFauxqs)
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "fauxqs", "dist", "app.js")); err != nil {
		return nil, fmt.Errorf("devbrokers: no fauxqs under %s: %w", dir, ErrNoFauxqs)
	}
	ctx, cancel := withStartTimeout(ctx)
	defer cancel()

	began := time.Now()
	cmd := exec.Command(node, "--input-type=module", "-e", fauxqsScript)
	cmd.Env = append(os.Environ(), "PUBCRYPT_FAUXQS_DIR="+dir)
	// Our own pipes rather than StdoutPipe, which Wait (in another goroutine) would close
	// under the reader.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer outR.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stdin = outW, inR
	c, err := startChild("fauxqs", cmd)
	outW.Close()
	inR.Close()
	if err != nil {
		inW.Close()
		return nil, err
	}
	f := &Fauxqs{child: c, stdin: inW}

	type result struct {
		addr string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(outR).ReadString('\n')
		var msg struct{ Address string }
		if err == nil {
			err = json.Unmarshal([]byte(line), &msg)
		}
		got <- result{msg.Address, err}
	}()
	select {
	case r := <-got:
		if r.err == nil && !strings.HasPrefix(r.addr, "http://127.0.0.1:") {
			r.err = fmt.Errorf("unexpected address %q", r.addr)
		}
		if r.err != nil {
			f.Stop()
			return nil, c.failure(r.err)
		}
		f.Endpoint = r.addr
	case <-ctx.Done():
		f.Stop()
		return nil, c.failure(ctx.Err())
	}
	f.Startup = time.Since(began)
	f.sqs = sqs.New(sqs.Options{Region: Region, BaseEndpoint: aws.String(f.Endpoint), Credentials: aws.AnonymousCredentials{}})
	f.sns = sns.New(sns.Options{Region: Region, BaseEndpoint: aws.String(f.Endpoint), Credentials: aws.AnonymousCredentials{}})
	return f, nil
}

// Stop stops fauxqs (its whole process group). It is safe to call more than once.
func (f *Fauxqs) Stop() {
	_ = f.stdin.Close()
	f.child.stop()
}

// params are the gocloud URL parameters that point the AWS SDK at this server.
func (f *Fauxqs) params() string {
	return "endpoint=" + url.QueryEscape(f.Endpoint) + "&region=" + Region
}

// SQSURL is the gocloud URL of a queue (topic or subscription):
// awssqs://127.0.0.1:PORT/000000000000/NAME?endpoint=...&region=us-east-1.
func (f *Fauxqs) SQSURL(queueURL string) string {
	return "awssqs://" + strings.TrimPrefix(queueURL, "http://") + "?" + f.params()
}

// SNSURL is the gocloud URL of a topic: awssns:///ARN?endpoint=...&region=us-east-1.
func (f *Fauxqs) SNSURL(topicARN string) string {
	return "awssns:///" + topicARN + "?" + f.params()
}

// CreateQueue creates a standard queue with the given visibility timeout (30 s if zero)
// and returns its URL and ARN.
func (f *Fauxqs) CreateQueue(ctx context.Context, name string, visibility time.Duration) (queueURL, arn string, err error) {
	if visibility <= 0 {
		visibility = 30 * time.Second
	}
	out, err := f.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String(name),
		Attributes: map[string]string{"VisibilityTimeout": strconv.Itoa(int(visibility / time.Second))},
	})
	if err != nil {
		return "", "", fmt.Errorf("devbrokers: create queue %s: %w", name, err)
	}
	attrs, err := f.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: out.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", "", fmt.Errorf("devbrokers: queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), attrs.Attributes["QueueArn"], nil
}

// CreateTopic creates an SNS topic and returns its ARN.
func (f *Fauxqs) CreateTopic(ctx context.Context, name string) (arn string, err error) {
	out, err := f.sns.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("devbrokers: create topic %s: %w", name, err)
	}
	return aws.ToString(out.TopicArn), nil
}

// SubscribeQueue subscribes an SQS queue to an SNS topic with raw message delivery: the
// queue receives the body and the attributes as published, not SNS's JSON notification.
func (f *Fauxqs) SubscribeQueue(ctx context.Context, topicARN, queueARN string) error {
	_, err := f.sns.Subscribe(ctx, &sns.SubscribeInput{
		TopicArn:   aws.String(topicARN),
		Protocol:   aws.String("sqs"),
		Endpoint:   aws.String(queueARN),
		Attributes: map[string]string{"RawMessageDelivery": "true"},
	})
	if err != nil {
		return fmt.Errorf("devbrokers: subscribe %s to %s: %w", queueARN, topicARN, err)
	}
	return nil
}
