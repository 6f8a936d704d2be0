package kgopubsub

import (
	"context"
	"errors"
	"net"
	"reflect"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/gcerrors"
)

// errorAs is errors.As for any target gocloud hands on: a target errors.As would panic
// on (a pointer to a type that is not an error) is answered false.
func errorAs(err error, target any) bool {
	t := reflect.TypeOf(target)
	if t == nil || t.Kind() != reflect.Pointer {
		return false
	}
	if e := t.Elem(); e.Kind() != reflect.Interface && !e.Implements(reflect.TypeFor[error]()) {
		return false
	}
	return errors.As(err, target)
}

// errorCode maps franz-go's and Kafka's errors onto gocloud's codes.
func errorCode(err error) gcerrors.ErrorCode {
	var ke *KeyError
	var ker *kerr.Error
	switch {
	case err == nil:
		return gcerrors.OK
	case errors.As(err, &ke):
		return gcerrors.InvalidArgument
	case errors.Is(err, context.Canceled):
		return gcerrors.Canceled
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout):
		return gcerrors.DeadlineExceeded
	case errors.Is(err, kgo.ErrClientClosed):
		return gcerrors.FailedPrecondition
	case errors.As(err, &ker):
		return kerrCode(ker)
	}
	return gcerrors.Unknown
}

func kerrCode(e *kerr.Error) gcerrors.ErrorCode {
	switch e {
	case kerr.UnknownTopicOrPartition, kerr.UnknownTopicID, kerr.GroupIDNotFound:
		return gcerrors.NotFound
	case kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.TransactionalIDAuthorizationFailed, kerr.SaslAuthenticationFailed:
		return gcerrors.PermissionDenied
	case kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage,
		kerr.InvalidTopicException, kerr.InvalidRequiredAcks:
		return gcerrors.InvalidArgument
	case kerr.PolicyViolation, kerr.UnsupportedVersion, kerr.UnsupportedSaslMechanism, kerr.UnsupportedForMessageFormat:
		return gcerrors.FailedPrecondition
	case kerr.RequestTimedOut:
		return gcerrors.DeadlineExceeded
	case kerr.ThrottlingQuotaExceeded:
		return gcerrors.ResourceExhausted
	}
	if e.Retriable {
		return gcerrors.Internal
	}
	return gcerrors.Unknown
}

// retryable reports whether a receive error may pass if tried again: Kafka's retriable
// errors and the network's.
func retryable(err error) bool {
	var ker *kerr.Error
	if errors.As(err, &ker) {
		return ker.Retriable
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}
