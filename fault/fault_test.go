package fault_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
)

func TestClassOf(t *testing.T) {
	errTampered := fault.New(fault.Message, "tampered")
	errDown := fault.New(fault.Environment, "down")
	plain := errors.New("something nobody classified")
	cases := []struct {
		name string
		err  error
		want fault.Class
	}{
		{"nil", nil, fault.None},
		{"message sentinel", errTampered, fault.Message},
		{"environment sentinel", errDown, fault.Environment},
		{"wrapped message", fmt.Errorf("message 7: %w", errTampered), fault.Message},
		{"unclassified is environment", plain, fault.Environment},
		{"context canceled is environment", context.Canceled, fault.Environment},
		{"mark wins over inner class", fault.Mark(errTampered, fault.Environment), fault.Environment},
		{"mark of plain error", fault.Mark(plain, fault.Message), fault.Message},
		{"first in chain wins", fmt.Errorf("%w: %w", errDown, errTampered), fault.Environment},
	}
	for _, c := range cases {
		if got := fault.ClassOf(c.err); got != c.want {
			t.Errorf("%s: ClassOf = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestMarkKeepsChain(t *testing.T) {
	base := errors.New("base")
	m := fault.Mark(fmt.Errorf("ctx: %w", base), fault.Message)
	if !errors.Is(m, base) {
		t.Fatal("errors.Is lost the marked error's chain")
	}
	if m.Error() != "ctx: base" {
		t.Fatalf("Mark changed the text: %q", m.Error())
	}
	if fault.Mark(nil, fault.Message) != nil {
		t.Fatal("Mark(nil) is not nil")
	}
	if !fault.IsMessage(m) || fault.IsEnvironment(m) {
		t.Fatal("IsMessage/IsEnvironment disagree with ClassOf")
	}
}

func ExampleClassOf() {
	errTampered := fault.New(fault.Message, "message authentication failed")
	err := fmt.Errorf("message 42: %w", errTampered)
	switch fault.ClassOf(err) {
	case fault.Message:
		fmt.Println("dead-letter, skip or stop, as configured")
	case fault.Environment:
		fmt.Println("do not ack: retry later")
	}
	// Output: dead-letter, skip or stop, as configured
}
