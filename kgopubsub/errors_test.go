package kgopubsub

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/gcerrors"
	"gocloud.dev/pubsub"
)

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want gcerrors.ErrorCode
	}{
		{fmt.Errorf("produce: %w", kerr.UnknownTopicOrPartition), gcerrors.NotFound},
		{kerr.TopicAuthorizationFailed, gcerrors.PermissionDenied},
		{kerr.SaslAuthenticationFailed, gcerrors.PermissionDenied},
		{kerr.MessageTooLarge, gcerrors.InvalidArgument},
		{kerr.NotLeaderForPartition, gcerrors.Internal}, // retriable: franz-go retried already
		{&KeyError{Field: "a"}, gcerrors.InvalidArgument},
		{kgo.ErrRecordTimeout, gcerrors.DeadlineExceeded},
		{context.Canceled, gcerrors.Canceled},
		{kgo.ErrClientClosed, gcerrors.FailedPrecondition},
		{errors.New("other"), gcerrors.Unknown},
	} {
		if got := errorCode(tc.err); got != tc.want {
			t.Errorf("errorCode(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestAs: the portable types reach the franz-go client and errors; a target errors.As
// would panic on is refused.
func TestAs(t *testing.T) {
	b := startKafka(t, 1, "as")
	top := openTopic(t, b, "as", TopicOptions{KeyField: "id"})
	var cl *kgo.Client
	if !top.As(&cl) || cl == nil {
		t.Fatal("topic As(**kgo.Client) failed")
	}
	sub := openSub(t, b, "g-as", SubscriptionOptions{}, "as")
	cl = nil
	if !sub.As(&cl) || cl == nil {
		t.Fatal("subscription As(**kgo.Client) failed")
	}
	err := top.Send(context.Background(), &pubsub.Message{Body: []byte(`{}`)})
	var ke *KeyError
	if !top.ErrorAs(err, &ke) || ke.Field != "id" {
		t.Fatalf("ErrorAs(*KeyError) on %v failed", err)
	}
	if gcerrors.Code(err) != gcerrors.InvalidArgument {
		t.Fatalf("code %v, want InvalidArgument", gcerrors.Code(err))
	}
	var s string
	if top.ErrorAs(err, &s) {
		t.Fatal("ErrorAs(*string) answered true")
	}
	var ker *kerr.Error
	if !errorAs(fmt.Errorf("x: %w", kerr.UnknownTopicOrPartition), &ker) || ker != kerr.UnknownTopicOrPartition {
		t.Fatal("errorAs(*kerr.Error) failed")
	}
}
