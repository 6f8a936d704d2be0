// Package fault sorts pubcrypt's errors into the two classes that decide what a program
// should do with a message it could not handle.
//
// A fault of the message is a property of that message: it is tampered with, malformed,
// carries no envelope, was made under a key version that is retired, is not JSON where a
// field policy needs JSON, or holds a value the key service refuses for its content (too
// large, say). Trying the same message again never helps; it follows the policy the user
// chose (dead-letter it, skip it and count it, or stop).
//
// A fault of the environment is a property of the world around the message: the key
// service is unreachable, slow or refuses the credentials, a key-encryption key is
// missing, the disk is full or the destination unwritable, the broker is unavailable.
// The same message will pass once the environment is mended, so such a message is never
// acknowledged: it is retried, redelivered, or left for the next run.
//
// ClassOf answers for any error. It answers Message only when an error in the chain says
// so; everything else, unknown errors included, is Environment, so that an error nobody
// classified can delay a message but never lose it.
package fault

import (
	"errors"
)

// Class is whose fault an error is.
type Class uint8

const (
	// None is the class of a nil error.
	None Class = iota
	// Message: the message itself cannot be handled; retrying it never helps.
	Message
	// Environment: something around the message failed; the message must not be
	// acknowledged, and will pass once the environment is mended.
	Environment
)

func (c Class) String() string {
	switch c {
	case None:
		return "none"
	case Message:
		return "message"
	case Environment:
		return "environment"
	}
	return "unknown"
}

// Classifier is implemented by errors that know their class. ClassOf asks the first
// Classifier found in an error's chain (in errors.As order).
type Classifier interface {
	FaultClass() Class
}

// ClassOf returns the class of err: None for nil, the class of the first Classifier in
// its chain, and Environment when no error in the chain has a class.
func ClassOf(err error) Class {
	if err == nil {
		return None
	}
	var c Classifier
	if errors.As(err, &c) {
		if cl := c.FaultClass(); cl == Message || cl == Environment {
			return cl
		}
	}
	return Environment
}

// IsMessage reports whether err is a fault of the message.
func IsMessage(err error) bool { return ClassOf(err) == Message }

// IsEnvironment reports whether err is a fault of the environment (nil is not).
func IsEnvironment(err error) bool { return ClassOf(err) == Environment }

// New returns a sentinel error of class c with the given text, for errors.Is comparisons
// ("var ErrAuth = fault.New(fault.Message, ...)").
func New(c Class, text string) error { return &sentinel{class: c, text: text} }

type sentinel struct {
	class Class
	text  string
}

func (s *sentinel) Error() string     { return s.text }
func (s *sentinel) FaultClass() Class { return s.class }

// Mark returns err with class c; errors.Is and errors.As still reach err and its chain.
// The class given here wins over any class inside err. Mark(nil, c) is nil.
func Mark(err error, c Class) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, class: c}
}

type marked struct {
	err   error
	class Class
}

func (m *marked) Error() string     { return m.err.Error() }
func (m *marked) Unwrap() error     { return m.err }
func (m *marked) FaultClass() Class { return m.class }
