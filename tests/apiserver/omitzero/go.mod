module biometrics.io/omitzero

go 1.19
