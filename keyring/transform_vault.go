package keyring

import (
	"context"
	"fmt"
)

// DefaultTransformMount is the mount path of the transform secrets engine that
// Vault.TransformEncode and Vault.TransformDecode use.
const DefaultTransformMount = "transform"

var _ Transformer = (*Vault)(nil)

// TransformEncode encodes values with the transform role's transformation on Vault
// Enterprise's Transform engine at DefaultTransformMount, in one request, as
// Transform.EncodeBatch (the same request, no tweaks). On open-source Vault it fails with
// ErrTransformNotAvailable. The token needs "update" on transform/encode/ROLE.
func (v *Vault) TransformEncode(ctx context.Context, role, transformation string, values []string) ([]string, error) {
	return v.transform(ctx, "encode", role, transformation, values)
}

// TransformDecode decodes values that TransformEncode encoded, as above; the token needs
// "update" on transform/decode/ROLE.
func (v *Vault) TransformDecode(ctx context.Context, role, transformation string, values []string) ([]string, error) {
	return v.transform(ctx, "decode", role, transformation, values)
}

func (v *Vault) transform(ctx context.Context, op, role, transformation string, values []string) ([]string, error) {
	if !transitName.MatchString(role) {
		return nil, &Error{Op: op, KeyID: role, Kind: ErrInvalidInput, Err: fmt.Errorf("%q is not a valid transform role name (letters, digits, _ . -)", role)}
	}
	if transformation != "" && !transitName.MatchString(transformation) {
		return nil, &Error{Op: op, KeyID: role, Kind: ErrInvalidInput, Err: fmt.Errorf("%q is not a valid transformation name", transformation)}
	}
	// A view of v on the transform mount: same client (and so the same request counter
	// and error mapping), the role as its key.
	tv := &Vault{client: v.client, mount: DefaultTransformMount, key: role, timeout: v.timeout, auth: v.auth}
	return transformBatch(ctx, tv, op, transformation, values, nil)
}
