// A real OpenID Connect provider (oidc-provider) for isogate's integration tests.
//
// It listens on an ephemeral 127.0.0.1 port, prints `port <N>` on stdout once it serves,
// and issues RFC 9068 JWT access tokens (`typ: at+jwt`) for the resource indicators in
// RESOURCES, signed with RS256 keys it generates at start:
//   - to services, by the client-credentials grant (clients in SERVICES);
//   - to users, by CIBA in poll mode (client USER_CLIENT, accounts in ACCOUNTS), which
//     also yields an ID token whose audience is the client id.
// The environment, tenant and roles of each service or account go into the access
// token as the claims `env`, `tenant` and `roles`.
//
// Commands, one per line on stdin (each answered by one line on stdout):
//   rotate   sign with a new key from now on, still publishing the old ones  -> `kid <kid>`
//   down     stop accepting connections (an outage)                          -> `down`
//   up       serve again on the same port                                     -> `up`
// End of stdin stops the provider.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider from 'oidc-provider';

const CLIENT_SECRET = 'isogate-test-secret-0123456789abcdef';
const USER_CLIENT = 'isogate-portal';

// Resource indicator -> the scopes the API accepts.
const RESOURCES = {
  'https://api.isogate.test': 'api',
  'https://other-api.test': 'api',
};

// Client id -> the isolation claims of its service tokens.
const SERVICES = {
  'billing-service': { env: 'prod', tenant: 'acme', roles: ['service', 'billing'] },
  'stage-runner': { env: 'stage', tenant: 'acme', roles: ['service'] },
};

// Account id -> the isolation claims of its tokens.
const ACCOUNTS = {
  alice: { env: 'prod', tenant: 'globex', roles: ['developer'] },
};

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function configuration(keys) {
  const clients = Object.keys(SERVICES).map((client_id) => ({
    client_id,
    client_secret: CLIENT_SECRET,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  }));
  clients.push({
    client_id: USER_CLIENT,
    client_secret: CLIENT_SECRET,
    grant_types: ['urn:openid:params:grant-type:ciba'],
    redirect_uris: [],
    response_types: [],
    backchannel_token_delivery_mode: 'poll',
  });
  return {
    clients,
    jwks: { keys },
    // The isolation claims go into the ID token as well (when the `isolation` scope is
    // granted): exactly what makes an ID token look like an access token to a careless API.
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], isolation: ['env', 'tenant', 'roles'] },
    findAccount: (ctx, id) => (ACCOUNTS[id]
      ? { accountId: id, claims: () => ({ sub: id, ...ACCOUNTS[id] }) }
      : undefined),
    extraTokenClaims: (ctx, token) => (token.accountId ? ACCOUNTS[token.accountId] : SERVICES[token.clientId]),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (!(resource in RESOURCES)) throw new Provider.errors.InvalidTarget();
          return {
            scope: RESOURCES[resource],
            audience: resource,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 300,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
      ciba: {
        enabled: true,
        deliveryModes: ['poll'],
        processLoginHint: (ctx, hint) => hint,
        processLoginHintToken: () => undefined,
        validateRequestContext: () => undefined,
        verifyUserCode: () => undefined,
        // The user approves at once on their "authentication device".
        triggerAuthenticationDevice: async (ctx, request, account, client) => {
          const { provider } = ctx.oidc;
          const grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId });
          grant.addOIDCScope(request.scope);
          const resources = [request.resource ?? []].flat();
          for (const resource of resources) grant.addResourceScope(resource, RESOURCES[resource]);
          await grant.save();
          await provider.backchannelResult(request, grant);
        },
      },
    },
  };
}

const keys = [signingKey()];
let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = createServer((req, res) => handler(req, res));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const start = () => {
    const provider = new Provider(issuer, configuration(keys));
    provider.on('server_error', (ctx, err) => console.error('server_error', err));
    handler = provider.callback();
  };
  start();
  console.log(`port ${port}`);

  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    switch (line.trim()) {
      case 'rotate':
        keys.unshift(signingKey());
        start();
        console.log(`kid ${keys[0].kid}`);
        break;
      case 'down':
        server.close();
        server.closeAllConnections();
        console.log('down');
        break;
      case 'up':
        server.listen(port, '127.0.0.1', () => console.log('up'));
        break;
      default:
        console.error(`unknown command: ${line}`);
    }
  });
  commands.on('close', () => process.exit(0));
});
