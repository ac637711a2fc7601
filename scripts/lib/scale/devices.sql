-- Seed step: 1.5 devices per user (one each, a second for every other user), in every state
-- and model the schema knows:
--   state: approved 85 %, pending_approval 5 %, revoked 10 %
--   model (bucket of 100): synced passkeys (iCloud Keychain 30, Google Password Manager 15,
--   unknown/zero AAGUID 14; device_type any, attestation none), bound models (Windows Hello
--   20, YubiKey 5 20; device_type enclave_only, chain verified, aaguid_verified), and one
--   flagged model (1 %: the FIDO metadata marked it compromised, `model_compromise` set).
-- `credential` is '{}': no listing or CheckEnrollment reads the stored passkey (as in
-- scripts/bench-check-enrollment.sh).
INSERT INTO devices (id, realm, user_id, credential_id, device_type, state, aaguid,
                     backup_eligible, user_agent, enrollment_link_id, credential, create_time,
                     last_used_time, approved_by, sign_count, model, certification_level,
                     attestation_format, attestation_root, model_compromise, aaguid_verified,
                     attachment, transports)
SELECT gen_random_uuid()::text, d.realm, d.user_id, 'cred-' || d.user_id || '-' || d.k,
       m.device_type,
       CASE WHEN d.x < 0.85 THEN 'approved' WHEN d.x < 0.90 THEN 'pending_approval'
            ELSE 'revoked' END,
       m.aaguid, m.backup_eligible,
       CASE d.user_id % 3 WHEN 0 THEN 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15'
                          WHEN 1 THEN 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0'
                          ELSE 'Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile' END,
       NULL, '{}',
       d.created, d.created + (now() - d.created) * d.y,
       CASE WHEN d.x < 0.85 THEN (CASE WHEN d.user_id % 5 = 0 THEN 'admin-console' ELSE 'policy' END)
            WHEN d.x < 0.90 THEN '' ELSE 'admin-console' END,
       (d.y * 5000)::bigint, m.model, m.certification_level, m.attestation_format,
       m.attestation_root, m.model_compromise, m.aaguid_verified, m.attachment, m.transports
FROM (
  SELECT u.realm, u.id AS user_id, k, random() AS x, random() AS y,
         floor(random() * 100)::int AS bucket,
         u.create_time + (now() - u.create_time) * random() AS created
  FROM users u, generate_series(1, 2) AS k
  WHERE k = 1 OR u.id % 2 = 0
) AS d
JOIN (VALUES
  -- bucket range, device_type, aaguid, backup eligible, model, certification level,
  -- attestation format, root, compromise, aaguid verified, attachment, transports
  (0, 29, 'any', 'fbfc3007-154e-4ecc-8c0b-6e020557d7bd', true, 'iCloud Keychain', '', 'none', '', '', false, 'platform', 'hybrid,internal'),
  (30, 44, 'any', 'ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4', true, 'Google Password Manager', '', 'none', '', '', false, 'platform', 'hybrid,internal'),
  (45, 58, 'any', '00000000-0000-0000-0000-000000000000', false, '', '', 'none', '', '', false, 'cross-platform', 'usb'),
  (59, 78, 'enclave_only', '08987058-cadc-4b81-b6e1-30de50dcbe96', false, 'Windows Hello', 'FIDO_CERTIFIED_L1', 'tpm', 'Microsoft TPM Root Certificate Authority 2014', '', true, 'platform', 'internal'),
  (79, 98, 'enclave_only', 'cb69481e-8ff7-4039-93ec-0a2729a154a8', false, 'YubiKey 5 Series', 'FIDO_CERTIFIED_L2', 'packed', 'Yubico FIDO Root CA Serial 457200631', '', true, 'cross-platform', 'nfc,usb'),
  (99, 99, 'enclave_only', '12ded745-4bed-47d4-abaa-e713f51d6393', false, 'Example Key (compromised)', 'FIDO_CERTIFIED_L1', 'packed', 'Example FIDO Root CA', 'model 12ded745-4bed-47d4-abaa-e713f51d6393 is REVOKED in the FIDO metadata (BLOB 42)', true, 'cross-platform', 'usb')
) AS m (low, high, device_type, aaguid, backup_eligible, model, certification_level,
        attestation_format, attestation_root, model_compromise, aaguid_verified, attachment,
        transports)
  ON d.bucket BETWEEN m.low AND m.high;
